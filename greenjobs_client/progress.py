"""What the CLI draws with rich: the live bulk-submission bars, the summary table, the job list.

The bars go to stderr, so stdout keeps only results; on a terminal they redraw in place, and
elsewhere (a pipe, CI) rich prints their final state once.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

#: Bars shown while a bulk submission runs, and the states each one counts.
ROWS = (("submitted", ()), ("waiting", ("scheduled", "queued")), ("running", ("running",)),
        ("done", ("succeeded",)), ("failed", ("failed", "cancelled")))


class BulkProgress:
    """One bar per row of ROWS over the total number of jobs."""

    def __init__(self, total: int, console: Console | None = None):
        self.total = total
        self.progress = Progress(TextColumn("{task.description:>9}"), BarColumn(bar_width=40), MofNCompleteColumn(),
                                 TaskProgressColumn(), TimeElapsedColumn(),
                                 console=console or Console(stderr=True), refresh_per_second=8)
        self.tasks = {name: self.progress.add_task(name, total=total) for name, _ in ROWS}

    def __enter__(self) -> BulkProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def submitted(self, count: int) -> None:
        """Move the submitted bar to ``count`` jobs."""
        self.progress.update(self.tasks["submitted"], completed=count)

    def counts(self, counts: dict[str, int]) -> None:
        """Set the other bars from the number of jobs in each state."""
        for name, states in ROWS[1:]:
            self.progress.update(self.tasks[name], completed=sum(counts.get(s, 0) for s in states))


def summary(total: int, batches: int, counts: dict[str, int], submit_seconds: float, seconds: float,
            waited: bool = True, console: Console | None = None) -> None:
    """The closing table: jobs per state, how long submitting and the whole run took."""
    console = console or _wide_console()
    table = Table(title=f"greenjobs: {total:,} jobs in {batches} batch{'es' if batches != 1 else ''}",
                  title_justify="left")
    table.add_column("state")
    table.add_column("jobs", justify="right")
    table.add_column("share", justify="right")
    for state in ("succeeded", "failed", "cancelled", "running", "queued", "scheduled"):
        count = counts.get(state, 0)
        if count or state in ("succeeded", "failed"):
            table.add_row(state, f"{count:,}", f"{100 * count / total:.1f} %" if total else "-")
    table.add_section()
    table.add_row("total", f"{total:,}", "")
    table.add_row("submitted in", f"{submit_seconds:.2f} s", f"{total / submit_seconds:,.0f} jobs/s"
                  if submit_seconds > 0 else "")
    if waited:
        table.add_row("all ended in", f"{seconds:.2f} s", f"{total / seconds:,.0f} jobs/s" if seconds > 0 else "")
    console.print(table)


def job_table(jobs: Iterable[dict[str, Any]], console: Console | None = None) -> None:
    """``greenjobs ls``: one row per job, the error of a failed one included."""
    table = Table()
    for name in ("id", "handler", "state", "attempts", "created", "error"):
        table.add_column(name, overflow="fold", no_wrap=name == "id")
    for job in jobs:
        error = job.get("error") or {}
        table.add_row(job["id"], job["handler"], job["state"], str(job.get("attempts", "")),
                      job.get("created_at") or "", f"{error.get('kind')}: {error.get('message')}" if error else "")
    (console or _wide_console()).print(table)


def schedule_table(schedules: Iterable[dict[str, Any]], console: Console | None = None) -> None:
    """``greenjobs schedules ls``: one row per schedule, its timing, next and last slot and last job."""
    table = Table()
    for name in ("name", "handler", "when", "next", "last", "last job", "source"):
        table.add_column(name, overflow="fold", no_wrap=name == "name")
    for schedule in schedules:
        when = (f"cron {schedule['cron']} ({schedule.get('timezone') or 'UTC'})" if schedule.get("cron")
                else f"every {schedule['every']:g} s")
        last_job = schedule.get("last_job") or {}
        table.add_row(schedule["name"], schedule["handler"], when,
                      "paused" if schedule.get("paused") else schedule.get("next_fire_at") or "-",
                      schedule.get("last_fire_at") or "-",
                      f"{last_job['id']} {last_job.get('state', '')}" if last_job else "-", schedule.get("source", ""))
    (console or _wide_console()).print(table)


def _wide_console() -> Console:
    """Stdout; when it is not a terminal (a pipe, a file), wide enough that ids and errors stay on one line."""
    console = Console()
    return console if console.is_terminal else Console(width=200)

"""The ``greenjobs`` command: submit, follow, cancel and list jobs, and manage schedules, from a shell.

Job commands print each job as one line of JSON on stdout (for ``jq``); ``ls`` and the bulk
submission print tables; errors go to stderr. Exit codes, which scripts can rely on:

    0  success
    1  a job failed or was cancelled (any one of them, for ``wait`` and bulk submissions)
    2  usage error, or the server rejected the request (unknown handler or job, a bad field, 409, 401/403)
    3  the server could not be reached, or failed (5xx, or 429/503 through every retry)
    4  a wait ran out of time; the jobs are left running
  130  interrupted (Ctrl-C); submitted jobs keep running
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from greenjobs_client.client import Client
from greenjobs_client.errors import (
    ConnectionFailed, GreenjobsClientError, InvalidRequest, JobCancelled, JobFailed, NotFound, Conflict,
    RequestFailed, WaitTimeout,
)

OK, JOB_FAILED, USAGE, SERVER, TIMED_OUT, INTERRUPTED = 0, 1, 2, 3, 4, 130
STATES = ("scheduled", "queued", "running", "succeeded", "failed", "cancelled")


class UsageError(Exception):
    """A bad flag value found after argparse (JSON that does not parse, a missing URL, ...)."""


def _json_arg(text: str, flag: str, kind: type) -> Any:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{flag} must be JSON ({exc}); e.g. {flag} '{{\"n\": 1}}'") from None
    if not isinstance(value, kind):
        raise UsageError(f"{flag} must be a JSON {'object' if kind is dict else 'array'}")
    return value


def _print_job(job: dict) -> None:
    print(json.dumps(job, separators=(",", ":")), flush=True)


def _job_outcome(job: dict) -> int:
    return OK if job["state"] == "succeeded" else JOB_FAILED if job["state"] in ("failed", "cancelled") else OK


# -- commands -------------------------------------------------------------------------
def cmd_submit(client: Client, args) -> int:
    """``greenjobs submit``: one job (followed to its end with --wait), or many with --from FILE."""
    if args.from_file:
        if args.handler:
            raise UsageError("give either HANDLER or --from FILE, not both")
        return cmd_submit_bulk(client, args)
    if not args.handler:
        raise UsageError("submit needs a HANDLER (or --from FILE.jsonl)")
    job_args = _json_arg(args.args, "--args", list) if args.args else []
    kwargs = _json_arg(args.kwargs, "--kwargs", dict) if args.kwargs else {}
    handle = client.submit_with(args.handler, job_args, kwargs, priority=args.priority, timeout=args.job_timeout,
                                max_retries=args.max_retries, delay=args.delay, run_at=args.run_at,
                                idempotency_key=args.idempotency_key)
    if not args.wait:
        _print_job(handle.last)
        return OK
    try:
        job = handle.wait(args.wait_timeout)
    except WaitTimeout as exc:
        _print_job(exc.last)
        print(f"greenjobs: {exc}", file=sys.stderr)
        return TIMED_OUT
    _print_job(job)
    return _job_outcome(job)


def cmd_submit_bulk(client: Client, args) -> int:
    """``greenjobs submit --from FILE``: submit a JSON Lines file in batches, with live bars and a summary."""
    from greenjobs_client import bulk
    from greenjobs_client.progress import BulkProgress, summary

    try:
        if args.from_file == "-":
            specs = bulk.read_jsonl(sys.stdin)
        else:
            with open(args.from_file, encoding="utf-8") as fh:
                specs = bulk.read_jsonl(fh)
    except OSError as exc:
        raise UsageError(f"cannot read {args.from_file}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"{args.from_file}: {exc}") from None
    if not specs:
        raise UsageError(f"{args.from_file} holds no jobs")
    started = time.monotonic()
    counts: dict[str, int] = {}
    code = OK
    with BulkProgress(len(specs)) as progress:
        try:
            batches = bulk.submit_all(client, specs, args.chunk, progress.submitted)
        except bulk.RejectedItem as exc:
            raise UsageError(f"{args.from_file}: {exc}") from None
        submit_seconds = time.monotonic() - started
        if args.no_wait:
            counts = bulk.totals(batch.counts() for batch in batches)
            progress.counts(counts)
        else:
            try:
                counts = bulk.follow(batches, args.wait_timeout, on_counts=progress.counts)
            except WaitTimeout as exc:
                counts, code = exc.last["counts"], TIMED_OUT
    summary(len(specs), len(batches), counts, submit_seconds, time.monotonic() - started, waited=not args.no_wait)
    ids = [batch.id for batch in batches]
    print(f"batches: {' '.join(ids)}", file=sys.stderr)
    if args.no_wait:
        print(f"follow them with: greenjobs batch {' '.join(ids)} --wait", file=sys.stderr)
    if counts.get("failed") or counts.get("cancelled"):
        failed = [job["id"] for job in client.jobs(state="failed", limit=1000) if job.get("batch") in set(ids)]
        if failed:
            print(f"failed jobs: {' '.join(failed[:100])}{' ...' if len(failed) > 100 else ''}", file=sys.stderr)
        if code == OK:
            code = JOB_FAILED
    return code


def cmd_batch(client: Client, args) -> int:
    """``greenjobs batch ID...``: each batch's counts as JSON; --wait follows them to their end (exit 1 if a job
    failed or was cancelled)."""
    from greenjobs_client import bulk
    batches = [client.batch(batch_id) for batch_id in args.ids]
    if args.wait:
        try:
            counts = bulk.follow(batches, args.wait_timeout)
        except WaitTimeout as exc:
            _print_job({"counts": exc.last["counts"]})
            print(f"greenjobs: {exc}", file=sys.stderr)
            return TIMED_OUT
        _print_job({"batches": args.ids, "counts": counts})
        return JOB_FAILED if counts.get("failed") or counts.get("cancelled") else OK
    for batch in batches:
        _print_job(batch.counts())
    return OK


def cmd_handlers(client: Client, args) -> int:
    """``greenjobs handlers``: what the server can run, a line each (--json: the server's objects)."""
    handlers = client.handlers()
    for h in handlers:
        if args.json:
            _print_job(h)
            continue
        limits = ", ".join(part for part in (f"rate {h['rate_limit']}" if h.get("rate_limit") else "",
                                             f"max_running {h['max_running']}" if h.get("max_running") else "",
                                             f"rerouted: {h['rerouted']}" if h.get("rerouted") else "") if part)
        print(f"{h['name']:<28} {h['kind']:<4} timeout {h.get('timeout')}  retries {h.get('max_retries')}"
              f"{'  ' + limits if limits else ''}  {h.get('doc') or ''}".rstrip())
    return OK


def cmd_health(client: Client, args) -> int:
    """``greenjobs health``: the server's /health as JSON; exit 3 when it is not ok."""
    try:
        health = client.health()
    except RequestFailed as exc:            # 503: its body still says why
        _print_job(exc.problem or {"status": exc.status, "detail": exc.detail})
        return SERVER
    _print_job(health)
    return OK if health.get("status") == "ok" else SERVER


def cmd_status(client: Client, args) -> int:
    """``greenjobs status ID``: print the job as one line of JSON."""
    _print_job(client.get(args.id))
    return OK


def cmd_wait(client: Client, args) -> int:
    """``greenjobs wait ID...``: wait for every job, all within one ``--wait-timeout`` (s), printing each."""
    deadline = None if args.wait_timeout is None else time.monotonic() + args.wait_timeout
    code = OK
    for job_id in args.ids:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            job = client.job(job_id).wait(remaining)
        except WaitTimeout as exc:
            _print_job(exc.last)
            print(f"greenjobs: {exc}", file=sys.stderr)
            code = TIMED_OUT
            continue
        _print_job(job)
        if code == OK:
            code = _job_outcome(job)
    return code


def cmd_cancel(client: Client, args) -> int:
    """``greenjobs cancel ID``: cancel the job and print it."""
    _print_job(client.job(args.id).cancel())
    return OK


def cmd_retry(client: Client, args) -> int:
    """``greenjobs retry ID``: run the failed job again and print it."""
    _print_job(client.job(args.id).retry())
    return OK


def cmd_ls(client: Client, args) -> int:
    """``greenjobs ls``: recent jobs as a table, or one line of JSON each with --json; a page at a time
    (``--after`` the cursor the last page printed), or ``--all``."""
    if args.all:
        jobs = list(client.jobs(state=args.state, handler=args.handler, limit=None))
        following = None
    else:
        jobs, following = client.page(state=args.state, handler=args.handler, limit=args.limit, after=args.after,
                                      search=args.search)
    if args.json:
        for job in jobs:
            _print_job(job)
    else:
        from greenjobs_client.progress import job_table
        job_table(jobs)
    if following:
        print(f"more: greenjobs ls --after {following}", file=sys.stderr)
    return OK


def cmd_workflow(client: Client, args) -> int:
    """``greenjobs workflow ID``: the workflow as JSON (state, result, steps); --wait follows it to its end
    (exit 1 if it failed or was cancelled)."""
    handle = client.workflow(args.id)
    answer = handle.wait(timeout=args.wait_timeout) if args.wait else handle.status()
    _print_job(answer)
    return JOB_FAILED if answer["state"] in ("failed", "cancelled") else OK


def cmd_schedules_ls(client: Client, args) -> int:
    """``greenjobs schedules ls``: every schedule as a table, or one line of JSON each with --json."""
    schedules = client.schedules()
    if args.json:
        for schedule in schedules:
            _print_job(schedule)
        return OK
    from greenjobs_client.progress import schedule_table
    schedule_table(schedules)
    return OK


def cmd_schedules_show(client: Client, args) -> int:
    """``greenjobs schedules show NAME``: the schedule as JSON, then its recent jobs with --jobs N."""
    _print_job(client.schedule(args.name))
    for job in client.jobs(schedule=args.name, limit=args.jobs) if args.jobs else ():
        _print_job(job)
    return OK


def cmd_schedules_add(client: Client, args) -> int:
    """``greenjobs schedules add NAME HANDLER --cron EXPR | --every SECONDS``: make a schedule, print it."""
    options = {"timezone": args.timezone, "missed": args.missed, "overlap": args.overlap, "jitter": args.jitter,
               "priority": args.priority, "timeout": args.job_timeout, "max_retries": args.max_retries,
               "start_at": args.start_at, "end_at": args.end_at, "paused": True if args.paused else None}
    _print_job(client.add_schedule(args.name, args.handler,
                                   _json_arg(args.args, "--args", list) if args.args else (),
                                   _json_arg(args.kwargs, "--kwargs", dict) if args.kwargs else None,
                                   cron=args.cron, every=args.every, **options))
    return OK


def cmd_schedules_pause(client: Client, args) -> int:
    """``greenjobs schedules pause NAME``."""
    _print_job(client.pause_schedule(args.name))
    return OK


def cmd_schedules_resume(client: Client, args) -> int:
    """``greenjobs schedules resume NAME``."""
    _print_job(client.resume_schedule(args.name))
    return OK


def cmd_schedules_rm(client: Client, args) -> int:
    """``greenjobs schedules rm NAME``: delete it (its jobs stay)."""
    client.delete_schedule(args.name)
    return OK


def cmd_schedules_run(client: Client, args) -> int:
    """``greenjobs schedules run NAME``: one extra job now; printed, or followed to its end with --wait."""
    handle = client.run_schedule(args.name)
    if not args.wait:
        _print_job(handle.last)
        return OK
    job = handle.wait(timeout=args.wait_timeout)
    _print_job(job)
    return _job_outcome(job)


# -- parsing --------------------------------------------------------------------------
def _connection_flags(parser: argparse.ArgumentParser, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("--url", default=default,
                        help="server URL (default: $GREENJOBS_URL, else http://127.0.0.1:6543)")
    parser.add_argument("--token", default=default, help="bearer token (default: $GREENJOBS_TOKEN)")
    parser.add_argument("--http-timeout", "--timeout", dest="timeout", type=float,
                        default=argparse.SUPPRESS if suppress else 10.0,
                        help="seconds to connect and to get each answer from the server (default 10; not the "
                             "job's --job-timeout nor a wait's --wait-timeout)")


def _subcommand(subparsers, name: str, func, help_text: str) -> argparse.ArgumentParser:
    sub = subparsers.add_parser(name, help=help_text, description=help_text)
    _connection_flags(sub, suppress=True)
    sub.set_defaults(func=func)
    return sub


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser; the connection flags are accepted before and after the subcommand."""
    parser = argparse.ArgumentParser(
        prog="greenjobs", description="Submit jobs to a greenjobs server and follow them.",
        epilog="exit codes: 0 ok, 1 a job failed or was cancelled, 2 usage error or request rejected, "
               "3 server or connection error, 4 wait timed out (jobs left running), 130 interrupted",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _connection_flags(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, func, help_text):
        return _subcommand(commands, name, func, help_text)

    sub = command("submit", cmd_submit, "submit one job (HANDLER), or many from a JSON Lines file (--from)")
    sub.add_argument("handler", nargs="?", metavar="HANDLER")
    sub.add_argument("--args", help="positional arguments as a JSON array")
    sub.add_argument("--kwargs", help="keyword arguments as a JSON object, e.g. '{\"seconds\": 1}'")
    sub.add_argument("--priority", type=int, help="0-9, higher runs first")
    sub.add_argument("--job-timeout", type=float, help="seconds the job may run (default: the handler's)")
    sub.add_argument("--max-retries", type=int, help="attempts after the first that fail")
    when = sub.add_mutually_exclusive_group()
    when.add_argument("--delay", type=float, help="seconds before the job may start")
    when.add_argument("--run-at", help="ISO 8601 time the job may start, e.g. 2030-01-01T09:00:00Z")
    sub.add_argument("--idempotency-key", help="repeat-safe key (default: a fresh uuid4 per invocation)")
    sub.add_argument("--wait", action="store_true", help="wait for the job to end; exit 1 if it failed")
    sub.add_argument("--from", dest="from_file", metavar="FILE",
                     help="submit every job of a JSON Lines file ('-': stdin), one job object per line, "
                          "with a live progress bar, then a summary table")
    sub.add_argument("--chunk", type=int, default=1000, help="jobs per batch request with --from (default 1000)")
    sub.add_argument("--no-wait", action="store_true", help="with --from: stop once every job is submitted")
    sub.add_argument("--wait-timeout", type=float, help="seconds to wait at most (default: no limit)")

    sub = command("batch", cmd_batch, "print batches' counts (as submit --from --no-wait left them); --wait follows"
                                      " them to their end")
    sub.add_argument("ids", nargs="+", metavar="ID")
    sub.add_argument("--wait", action="store_true", help="wait for every job; exit 1 if one failed or was cancelled")
    sub.add_argument("--wait-timeout", type=float, help="seconds to wait at most (default: no limit)")

    sub = command("handlers", cmd_handlers, "list the handlers the server can run, with their limits")
    sub.add_argument("--json", action="store_true", help="one JSON object per line")

    command("health", cmd_health, "print the server's health; exit 3 unless it is ok")

    sub = command("status", cmd_status, "print a job")
    sub.add_argument("id", metavar="ID")

    sub = command("wait", cmd_wait, "wait for jobs to end and print them; exit 1 if any failed")
    sub.add_argument("ids", nargs="+", metavar="ID")
    sub.add_argument("--wait-timeout", type=float, help="seconds to wait at most for all of them")

    sub = command("cancel", cmd_cancel, "cancel a scheduled, queued or running job")
    sub.add_argument("id", metavar="ID")

    sub = command("retry", cmd_retry, "run a failed job again")
    sub.add_argument("id", metavar="ID")

    sub = command("ls", cmd_ls, "list jobs, newest first")
    sub.add_argument("--state", choices=STATES)
    sub.add_argument("--handler")
    sub.add_argument("--limit", type=int, default=50, help="a page of at most this many (default 50)")
    sub.add_argument("--after", help="the page after this cursor (printed after a full page)")
    sub.add_argument("--search", help="only jobs whose args or kwargs contain this text (e.g. an order id)")
    sub.add_argument("--all", action="store_true", help="every matching job, page after page")
    sub.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")

    sub = command("workflow", cmd_workflow, "print a workflow: its state, result and steps")
    sub.add_argument("id", metavar="ID")
    sub.add_argument("--wait", action="store_true", help="wait for it to end; exit 1 if it failed or was cancelled")
    sub.add_argument("--wait-timeout", type=float, help="seconds to wait at most (default: no limit)")

    group = commands.add_parser("schedules", help="list and manage periodic jobs (managing needs an admin token)",
                                description="List and manage schedules: periodic jobs fired on cron or every slots.")
    _connection_flags(group, suppress=True)
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name, func, help_text):
        return _subcommand(actions, name, func, help_text)

    sub = action("ls", cmd_schedules_ls, "list schedules with their next and last slot and last job")
    sub.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    sub = action("show", cmd_schedules_show, "print a schedule (and its recent jobs with --jobs N)")
    sub.add_argument("name", metavar="NAME")
    sub.add_argument("--jobs", type=int, default=0, metavar="N", help="also print its N newest jobs")
    sub = action("add", cmd_schedules_add, "make a schedule: HANDLER on each --cron slot or --every SECONDS")
    sub.add_argument("name", metavar="NAME")
    sub.add_argument("handler", metavar="HANDLER")
    timing = sub.add_mutually_exclusive_group(required=True)
    timing.add_argument("--cron", help="five fields: minute hour day-of-month month day-of-week, e.g. '30 2 * * *'")
    timing.add_argument("--every", type=float, help="seconds between slots (>= 1)")
    sub.add_argument("--timezone", help="IANA zone of --cron, e.g. Europe/Berlin (default UTC)")
    sub.add_argument("--args", help="the job's positional arguments as a JSON array")
    sub.add_argument("--kwargs", help="the job's keyword arguments as a JSON object")
    sub.add_argument("--missed", choices=("skip", "once", "all"),
                     help="slots missed while no server ran: skip (default), one catch-up job, or each")
    sub.add_argument("--overlap", choices=("allow", "skip"), help="skip: no slot while the last job is active")
    sub.add_argument("--jitter", type=float, help="each job starts up to this many seconds after its slot")
    sub.add_argument("--start-at", help="ISO 8601: no slot before (anchors --every)")
    sub.add_argument("--end-at", help="ISO 8601: no slot after")
    sub.add_argument("--paused", action="store_true", help="make it paused")
    sub.add_argument("--priority", type=int, help="the job's priority, 0-9")
    sub.add_argument("--job-timeout", type=float, help="seconds each job may run")
    sub.add_argument("--max-retries", type=int, help="attempts after the first that fail")
    for name, func, help_text in (("pause", cmd_schedules_pause, "fire no slot until resumed"),
                                  ("resume", cmd_schedules_resume, "fire again from the next slot after now"),
                                  ("rm", cmd_schedules_rm, "delete a schedule (its jobs stay)")):
        action(name, func, help_text).add_argument("name", metavar="NAME")
    sub = action("run", cmd_schedules_run, "submit one extra job from the schedule now (not a slot)")
    sub.add_argument("name", metavar="NAME")
    sub.add_argument("--wait", action="store_true", help="wait for the job to end; exit 1 if it failed")
    sub.add_argument("--wait-timeout", type=float, help="seconds to wait at most (default: no limit)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``greenjobs`` command; returns the exit code (see the module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    url = args.url or os.environ.get("GREENJOBS_URL") or "http://127.0.0.1:6543"
    token = args.token or os.environ.get("GREENJOBS_TOKEN") or None
    try:
        with Client(url, token=token, timeout=args.timeout) as client:
            return args.func(client, args)
    except UsageError as exc:
        parser.error(str(exc))      # exits 2
    except ValueError as exc:       # a bad --url
        parser.error(str(exc))
    except (JobFailed, JobCancelled) as exc:
        print(f"greenjobs: {exc}", file=sys.stderr)
        return JOB_FAILED
    except (InvalidRequest, NotFound, Conflict) as exc:
        print(f"greenjobs: {exc}", file=sys.stderr)
        return USAGE
    except RequestFailed as exc:
        print(f"greenjobs: {exc}", file=sys.stderr)
        return USAGE if exc.status in (401, 403) else SERVER     # rejected: a token missing or without the right
    except (ConnectionFailed, RequestFailed) as exc:
        print(f"greenjobs: {exc}", file=sys.stderr)
        return SERVER
    except WaitTimeout as exc:
        print(f"greenjobs: {exc}", file=sys.stderr)
        return TIMED_OUT
    except GreenjobsClientError as exc:
        print(f"greenjobs: {exc}", file=sys.stderr)
        return SERVER
    except KeyboardInterrupt:
        print("greenjobs: interrupted; submitted jobs keep running", file=sys.stderr)
        return INTERRUPTED
    return OK


if __name__ == "__main__":
    sys.exit(main())

"""A ledger in the style of RabbitMQ's Jepsen tests: what was accepted, what ran, what the store says."""
from __future__ import annotations

import collections
from dataclasses import dataclass, field
from pathlib import Path

TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass
class Ledger:
    folder: Path
    accepted: set[str] = field(default_factory=set)

    def accept(self, response) -> None:
        """Record a submission's answer: only a 202 (or 200) means the server took responsibility."""
        if response.status_code in (200, 202):
            body = response.json()
            self.accepted.update(body.get("ids") or [body["id"]])

    def executions(self) -> dict[str, collections.Counter]:
        runs: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        path = self.folder / "executions.log"
        if path.exists():
            for line in path.read_text().splitlines():
                job_id, _attempt, event, _pid = line.split()
                runs[job_id][event] += 1
        return runs

    def done_by(self) -> collections.Counter:
        """Completions per process id (which server or worker ran the jobs)."""
        pids: collections.Counter = collections.Counter()
        path = self.folder / "executions.log"
        if path.exists():
            for line in path.read_text().splitlines():
                _job, _attempt, event, pid = line.split()
                if event == "done":
                    pids[int(pid)] += 1
        return pids

    def report(self, final: dict[str, dict]) -> dict[str, set[str]]:
        """``final``: job id -> job as GET /jobs shows it at the end.

        lost: accepted, but not in the store or never completed; stuck: accepted, not terminal;
        duplicated: completed more than once; unexpected: ran, but never accepted.
        """
        runs = self.executions()
        return {
            "lost": {j for j in self.accepted if j not in final or (final[j]["state"] == "succeeded"
                                                                  and runs[j]["done"] == 0)},
            "stuck": {j for j in self.accepted if j in final and final[j]["state"] not in TERMINAL},
            "duplicated": {j for j, c in runs.items() if c["done"] > 1},
            "unexpected": {j for j in runs if j not in self.accepted},
        }

"""RQ 3: ``rq worker`` × CPU count for every workload (RQ runs one job at a time per worker).

The default Worker forks a work horse per job, as RQ's docs run it. Job ids carry the run's
namespace so the harness can delete every key it made.
"""
from __future__ import annotations

import time
import uuid

from redis import Redis
from rq import Queue
from rq.job import Job

from bench.peers import jobs
from bench.peers.base import CPUS, NotReady, Peer

FUNCS = {name: getattr(jobs, name) for name in ("sleep", "http_get", "pbkdf2", "echo")}


class RqPeer(Peer):
    name = "rq"
    has_batch = True

    def __init__(self, *args):
        super().__init__(*args)
        self.conn = Redis.from_url(self.redis_url)
        self.queue = Queue(self.namespace, connection=self.conn)

    def worker_commands(self, mode):
        return [["rq", "worker", "-u", self.redis_url, "-q", "-n", f"{self.namespace}-{i}", self.namespace]
                for i in range(CPUS)]

    def configuration(self, mode):
        return f"rq worker x {CPUS} (fork per job); Redis; enqueue_many for batch"

    def _id(self):
        return f"{self.namespace}-{uuid.uuid4().hex}"

    def submit(self, job, **kwargs):
        return self.queue.enqueue(FUNCS[job], kwargs=kwargs, job_id=self._id())

    def submit_many(self, job, kwargs_list):
        return self.queue.enqueue_many([Queue.prepare_data(FUNCS[job], kwargs=kw, job_id=self._id())
                                        for kw in kwargs_list])

    def result(self, handle, timeout=60.0):
        res = handle.latest_result(timeout=max(1, int(timeout)))
        if res is None:
            raise NotReady(handle.id)
        if res.type != res.Type.SUCCESSFUL:
            raise RuntimeError(f"rq job {handle.id}: {res.exc_string}")
        return res.return_value

    def wait_all(self, handles, timeout=1200.0):
        """Sweep the pending jobs' status with one pipeline every 20 ms."""
        pending = [h.id for h in handles]
        deadline = time.monotonic() + timeout
        while pending:
            pipe = self.conn.pipeline(transaction=False)
            for job_id in pending:
                pipe.hget(Job.key_for(job_id), "status")
            statuses = pipe.execute()
            failed = [j for j, s in zip(pending, statuses) if s == b"failed"]
            if failed:
                raise RuntimeError(f"rq job {failed[0]} failed")
            pending = [j for j, s in zip(pending, statuses) if s != b"finished"]
            if pending:
                if time.monotonic() > deadline:
                    raise NotReady(f"{len(pending)} rq jobs not finished in {timeout} s")
                time.sleep(0.02)


Peer = RqPeer

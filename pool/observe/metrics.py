"""Prometheus metrics.  Jobs pay a few dictionary updates per lifecycle event; a scrape reads
those totals and the live gauges, and counts active jobs through the state index (cached for a
second), so its cost does not grow with the number of finished jobs kept in the store."""
from __future__ import annotations

import bisect
import collections
import time

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from greenjobs.pool.listeners import Listener

BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)


class Histogram:
    __slots__ = ("counts", "total")

    def __init__(self):
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, int]]:
        out, running = [], 0
        for bound, count in zip((*map(str, BUCKETS), "+Inf"), self.counts):
            running += count
            out.append((bound, running))
        return out


class JobMetrics(Listener):
    """Totals kept from the lifecycle events of this server process."""

    def __init__(self):
        self.events: collections.Counter = collections.Counter()     # (event, handler) -> n
        self.duration: dict[str, Histogram] = collections.defaultdict(Histogram)
        self.queue_wait: dict[str, Histogram] = collections.defaultdict(Histogram)

    def job_event(self, name: str, job) -> None:
        """Count the event; time queue waits (at start) and run times (at the end)."""
        self.events[(name, job.handler)] += 1
        if name == "started" and job.started_at is not None:
            self.queue_wait[job.handler].observe(max(0.0, job.started_at - (job.run_at or job.created_at)))
        elif name in ("succeeded", "failed") and job.started_at is not None:
            self.duration[job.handler].observe(max(0.0, (job.finished_at or time.time()) - job.started_at))


class Collector:
    """A prometheus_client collector over the runtime: registered on a registry of the app's own."""

    def __init__(self, runtime, cache_seconds: float = 1.0):
        self.runtime = runtime
        self.cache_seconds = cache_seconds
        self._active: tuple[float, list] = (0.0, [])

    def _active_counts(self) -> tuple[list[tuple[str, str, int]], list[tuple[str, str, int]]]:
        """(active jobs by handler and state, jobs held back by their gate by handler and reason), cached."""
        at, rows = self._active
        if time.monotonic() - at > self.cache_seconds:
            rows = (self.runtime.store.active_counts(), self.runtime.store.waiting_counts())
            self._active = (time.monotonic(), rows)
        return rows

    def collect(self):
        """The metric families of one scrape: event totals, histograms, live gauges."""
        rt = self.runtime
        m = rt.metrics
        events = {"submitted": "greenjobs_jobs_submitted", "started": "greenjobs_jobs_started",
                  "retrying": "greenjobs_jobs_retried"}
        for name, metric in events.items():
            family = CounterMetricFamily(metric, f"jobs {name} (this server process)", labels=["handler"])
            for (event, handler), n in sorted(m.events.items()):
                if event == name:
                    family.add_metric([handler], n)
            yield family
        finished = CounterMetricFamily("greenjobs_jobs_finished", "jobs that reached a final state",
                                       labels=["handler", "state"])
        for (event, handler), n in sorted(m.events.items()):
            if event in ("succeeded", "failed", "cancelled"):
                finished.add_metric([handler, event], n)
        yield finished
        for metric, source, text in (("greenjobs_job_duration_seconds", m.duration, "run time of a job's last attempt"),
                                     ("greenjobs_job_queue_wait_seconds", m.queue_wait,
                                      "from submission (or run_at) to the start of an attempt")):
            family = HistogramMetricFamily(metric, text, labels=["handler"])
            for handler, hist in sorted(source.items()):
                family.add_metric([handler], hist.cumulative(), hist.total)
            yield family
        jobs = GaugeMetricFamily("greenjobs_jobs", "active jobs in the store by handler and state",
                                 labels=["handler", "state"])
        active, waiting = self._active_counts()
        for handler, state, n in active:
            jobs.add_metric([handler, state], n)
        yield jobs
        hub = rt.hub.stats()
        blocked = CounterMetricFamily("greenjobs_hub_blocked_seconds", "seconds the event loop was blocked, by who "
                                      "held it: a handler's job, request:<route> or runtime", labels=["handler"])
        blocks = CounterMetricFamily("greenjobs_hub_blocks", "times the event loop was blocked longer than "
                                     "greenjobs.hub.max_blocking, by who held it", labels=["handler"])
        for label in sorted(hub["seconds"]):
            blocked.add_metric([label], hub["seconds"][label])
            blocks.add_metric([label], hub["counts"][label])
        yield blocked
        yield blocks
        lag = HistogramMetricFamily("greenjobs_hub_lag_seconds", "how late the hub's guard tick ran (its lag)")
        lag.add_metric([], hub["lag"].cumulative(), hub["lag"].total)
        yield lag
        held = GaugeMetricFamily("greenjobs_jobs_waiting", "jobs their flow control holds back (in the store), by "
                                 "handler and reason: rate_limit or max_running", labels=["handler", "reason"])
        for handler, reason, n in waiting:
            held.add_metric([handler, reason], n)
        yield held
        io = rt.io.stats()
        for key, text in (("size", "greenlets the io pool may run at once"), ("busy", "io jobs running"),
                          ("pending", "io jobs waiting for a slot")):
            yield GaugeMetricFamily(f"greenjobs_pool_{key}", text, value=io[key])
        cpu = rt.cpu.stats()
        yield GaugeMetricFamily("greenjobs_cpu_running", "cpu jobs running on workers", value=cpu["running"])
        yield GaugeMetricFamily("greenjobs_cpu_to_publish", "cpu jobs waiting to be published", value=cpu["to_publish"])
        yield GaugeMetricFamily("greenjobs_workers_alive", "worker processes alive (supervised by this server)",
                                value=cpu["workers"] or 0)
        yield CounterMetricFamily("greenjobs_worker_restarts", "worker processes restarted",
                                  value=cpu["worker_restarts"] or 0)
        messages = CounterMetricFamily("greenjobs_cpu_worker_messages", "claims, results and progress from cpu "
                                       "workers, by route (line: a supervised worker's direct line; broker)",
                                       labels=["route", "type"])
        for key, n in sorted(cpu["messages"].items()):
            messages.add_metric(key.split(":", 1), n)
        yield messages
        yield GaugeMetricFamily("greenjobs_broker_connected", "1 when the cpu job broker is connected",
                                value=int(bool(cpu["broker_connected"])))
        yield GaugeMetricFamily("greenjobs_event_subscribers", "open event streams (GET /events)",
                                value=rt.events.subscribers)
        yield CounterMetricFamily("greenjobs_event_subscribers_dropped", "event streams dropped for falling behind",
                                  value=rt.events.dropped)
        yield GaugeMetricFamily("greenjobs_waiters", "parked long-polls", value=rt.waiters.count())
        yield CounterMetricFamily("greenjobs_signal_calls_dropped", "signal receiver calls dropped (backlog full)",
                                  value=rt.signals.dropped)
        yield CounterMetricFamily("greenjobs_signal_receiver_errors", "signal receiver calls that raised",
                                  value=rt.signals.failed)
        lag = HistogramMetricFamily("greenjobs_schedule_lag_seconds",
                                    "from a schedule's slot to its job stored (this server's firings)")
        lag.add_metric([], rt.scheduler.lag.cumulative(), rt.scheduler.lag.total)
        yield lag
        yield CounterMetricFamily("greenjobs_schedule_jobs_fired", "jobs made by schedules' slots (this server)",
                                  value=rt.scheduler.fired)
        yield CounterMetricFamily("greenjobs_schedule_slots_skipped", "slots skipped: the last job still active "
                                  "(overlap = skip)", value=rt.scheduler.skipped)
        yield GaugeMetricFamily("greenjobs_store_ok", "1 when the store accepts writes", value=int(rt.store.healthy))
        # the cluster, from the servers table as of this server's last heartbeat (the same on every server)
        servers = rt.members.view()
        alive = [s for s in servers if s["alive"]]
        family = GaugeMetricFamily("greenjobs_cluster_servers", "servers sharing the ledger, alive (a heartbeat within "
                                   "the lease) or lost", labels=["state"])
        family.add_metric(["alive"], len(alive))
        family.add_metric(["lost"], len(servers) - len(alive))
        yield family
        yield GaugeMetricFamily("greenjobs_cluster_pool_size", "io slots of the alive servers together",
                                value=sum(s["pool_size"] for s in alive))
        yield GaugeMetricFamily("greenjobs_cluster_pool_busy", "io jobs running on the alive servers together",
                                value=sum(s["pool_busy"] for s in alive))
        yield GaugeMetricFamily("greenjobs_cluster_cpu_workers", "cpu worker processes the alive servers supervise",
                                value=sum(s["cpu_workers"] for s in alive))
        yield CounterMetricFamily("greenjobs_outcomes_rejected", "late outcomes the store refused: their runner no "
                                  "longer held the job (cancelled, or adopted after its lease expired)",
                                  value=rt.sink.rejected)

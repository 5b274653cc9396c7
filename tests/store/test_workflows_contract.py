"""The workflows part of the JobStore contract, on every backend: a step's end moves its dependents in the
same transaction — released with their input once the last dependency succeeded, cancelled upstream_failed
when one failed or was cancelled — and an end counts once, however often its runner reports it."""
import json

import pytest

from greenjobs.pool.job import CANCELLED, FAILED, QUEUED, RUNNING, SCHEDULED, SUCCEEDED
from greenjobs.pool.registry import Registry
from greenjobs.pool.workflows import parse_workflow
from greenjobs.server.settings import load

OWNER = "test-owner"


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return Registry().load(["greenjobs.handlers.builtin", "tests.workflow_handlers"]), \
        load({}, str(tmp_path_factory.mktemp("s")))


@pytest.fixture
def moved(store):
    seen = []
    store.on_steps_moved = seen.append
    return seen


def plan(ctx, body, max_jobs=100):
    return parse_workflow(body, *ctx, max_jobs)


def stored(store, p):
    store.insert(p.jobs, OWNER, batch_id=p.id, workflow=p)
    return {j.id: j for j in store.workflow_jobs(p.id)}


def run(store, job_id, value=None, state=SUCCEEDED, error=None):
    """Take the job as a runner would (claim), then record its outcome; returns whether it was recorded."""
    job = store.get(job_id)
    assert job.state == QUEUED, job.state
    assert store.claim(job, OWNER).get()
    return store.finish(job, OWNER, state, None if value is None else json.dumps(value), error)


def test_a_chain_passes_each_result_on_and_an_immutable_step_takes_none(store, ctx, moved):
    p = plan(ctx, {"chain": [{"handler": "wf.add", "args": [1, 2]}, {"handler": "wf.add", "args": [10]},
                             {"handler": "wf.add", "args": [5], "immutable": True}]})
    jobs = stored(store, p)
    first, second, third = (j.id for j in p.jobs)
    assert [jobs[i].state for i in (first, second, third)] == [QUEUED, SCHEDULED, SCHEDULED]
    assert jobs[second].deps_left == 1 and jobs[second].run_at is None
    assert store.promote_due(("io", "cpu")) == [], "a waiting step has no time: never promoted"
    assert store.workflow_shape(p.id) == p.shape()

    assert run(store, first, 3)
    assert [j.id for j in moved[-1].released] == [second]
    released = store.get(second)
    assert (released.state, released.args, released.deps_left) == (QUEUED, [3, 10], 0)
    assert run(store, second, 13)
    assert store.get(third).args == [5], "immutable: its own args only"


def test_a_chord_body_gets_its_header_results_in_order_once_the_last_ends(store, ctx, moved):
    p = plan(ctx, {"chord": {"header": [{"handler": "wf.add", "args": [i]} for i in range(4)],
                             "body": {"handler": "wf.total", "kwargs": {"y": 100}}}})
    stored(store, p)
    *header, body = (j.id for j in p.jobs)
    for n, job_id in enumerate(reversed(header)):       # in reverse: the body's input keeps header order
        assert run(store, job_id, 10 * (3 - n))
        assert store.get(body).state == (SCHEDULED if n < 3 else QUEUED)
        assert store.get(body).deps_left == 3 - n
    assert store.get(body).args == [[0, 10, 20, 30]]
    assert len([m for m in moved if m.released]) == 1


def test_an_end_counts_once_however_often_its_runner_reports_it(store, ctx, moved):
    p = plan(ctx, {"chord": {"header": [{"handler": "wf.add", "args": [1]}, {"handler": "wf.add", "args": [2]}],
                             "body": {"handler": "wf.total"}}})
    stored(store, p)
    a, b, body = (j.id for j in p.jobs)
    job = store.get(a)
    assert store.claim(job, OWNER).get()
    assert store.finish(job, OWNER, SUCCEEDED, "1", None)
    assert not store.finish(job, OWNER, SUCCEEDED, "1", None), "a second report of the same attempt is fenced out"
    assert store.get(body).deps_left == 1, "counted once"
    late = store.get(b)
    assert store.claim(late, OWNER).get()
    late.attempts += 1                                     # as if another attempt had started since
    assert not store.finish(late, OWNER, SUCCEEDED, "2", None)
    assert store.get(body).state == SCHEDULED and store.get(body).deps_left == 1


def test_a_failed_step_cancels_everything_downstream_at_once_and_nothing_beside_it(store, ctx, moved):
    p = plan(ctx, {"group": [{"chain": [{"handler": "wf.add", "args": [1]}, {"handler": "wf.add"},
                                        {"handler": "wf.add"}]},
                             {"chain": [{"handler": "wf.add", "args": [2]}, {"handler": "wf.add"}]}]})
    stored(store, p)
    a1, a2, a3, b1, b2 = (j.id for j in p.jobs)
    error = {"kind": "exception", "message": "x", "traceback": None}
    assert run(store, a1, state=FAILED, error=error)
    assert sorted(j.id for j in moved[-1].cancelled) == sorted([a2, a3])
    for job_id in (a2, a3):
        job = store.get(job_id)
        assert job.state == CANCELLED and job.error["kind"] == "upstream_failed" and job.finished_at
    assert run(store, b1, 2) and store.get(b2).state == QUEUED, "the other branch goes on"


def test_cancelling_a_waiting_or_running_step_cancels_its_downstream(store, ctx, moved):
    p = plan(ctx, {"chain": [{"handler": "wf.add", "args": [1]}, {"handler": "wf.add"}, {"handler": "wf.add"}]})
    stored(store, p)
    first, second, third = (j.id for j in p.jobs)
    job, changed = store.cancel(second, {"kind": "cancelled", "message": "by request", "traceback": None})
    assert changed and job.state == CANCELLED
    assert [j.id for j in moved[-1].cancelled] == [third]
    assert run(store, first, 1)
    assert store.get(second).state == CANCELLED, "a cancelled step is not released by its dependency's end"

    p = plan(ctx, {"chain": [{"handler": "wf.nap"}, {"handler": "wf.add"}]})
    stored(store, p)
    head, tail = (j.id for j in p.jobs)
    running = store.get(head)
    assert store.claim(running, OWNER).get() and store.get(head).state == RUNNING
    store.cancel(head, {"kind": "cancelled", "message": "by request", "traceback": None})
    assert store.get(tail).state == CANCELLED


def test_a_released_cpu_step_goes_to_the_outbox(store, ctx):
    p = plan(ctx, {"chain": [{"handler": "wf.add", "args": [1]}, {"handler": "wf.cpu_add", "kwargs": {"y": 1}}]})
    stored(store, p)
    first, second = (j.id for j in p.jobs)
    assert second not in [j.id for j in store.unpublished()[0]], "waiting: not published"
    assert run(store, first, 1)
    assert second in [j.id for j in store.unpublished()[0]]


def test_a_sweep_takes_the_edges_of_a_workflow_whose_jobs_are_gone(store, ctx):
    p = plan(ctx, {"chain": [{"handler": "wf.add", "args": [1]}, {"handler": "wf.add"}]})
    stored(store, p)
    for job in p.jobs:
        run(store, job.id, 1)
    assert store.sweep(finished_before=float("inf")) == 2
    count = store._db.read(lambda conn: conn.execute("SELECT count(*) FROM job_deps").fetchone()[0])
    assert count == 0 and store.workflow_shape(p.id) is None


def test_a_failed_step_is_not_revived_alone(store, ctx):
    p = plan(ctx, {"chain": [{"handler": "wf.add", "args": [1]}, {"handler": "wf.add"}]})
    stored(store, p)
    first = p.jobs[0].id
    run(store, first, state=FAILED, error={"kind": "exception", "message": "x", "traceback": None})
    job, changed = store.revive(first)
    assert not changed and job.state == FAILED and job.workflow_id == p.id

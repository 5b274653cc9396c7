"""Workflows from the Python client against a real server: Celery's canvas, mechanically."""
import pytest

from greenjobs_client import JobFailed, WaitTimeout, chain, chord, group, job_spec, s, si

pytestmark = pytest.mark.e2e


def test_chain_group_and_chord_read_like_celery(client):
    # celery: chain(add.s(1, 2), add.s(10), group(add.s(100), add.s(1000)), total.s())
    flow = client.run(chain(s("wf.add", 1, 2), s("wf.add", 10), group(s("wf.add", 100), s("wf.add", 1000)),
                            s("wf.total")))
    assert flow.result(timeout=30) == 113 + 1013
    assert [j.status()["workflow"]["id"] for j in flow.jobs] == [flow.id] * 5
    # celery: chord(add.s(i, i) for i in range(5))(total.s())
    assert client.run(chord([s("wf.add", i, i) for i in range(5)], s("wf.total"))).result(timeout=30) == 20
    # an immutable step (.si) and a job_spec step with options
    flow = client.run(chain(s("wf.add", 1), si("wf.add", 5, 5), job_spec("wf.add", [7], priority=9, max_retries=2)))
    assert flow.result(timeout=30) == 17
    assert flow.jobs[2].status()["priority"] == 9


def test_a_failed_step_raises_its_remote_error_and_the_rest_is_cancelled(client):
    flow = client.run(chain(s("wf.add", 1), s("wf.boom", message="bad input"), s("wf.add")))
    with pytest.raises(JobFailed) as failed:
        flow.result(timeout=30)
    assert failed.value.kind == "exception" and "bad input" in failed.value.message
    assert [j["state"] for j in flow.last["jobs"]] == ["succeeded", "failed", "cancelled"]


def test_a_workflow_can_be_waited_for_with_a_timeout_and_cancelled(client):
    flow = client.run(chain(s("wf.nap", 1, seconds=30), s("wf.add")))
    with pytest.raises(WaitTimeout):
        flow.wait(timeout=0.5)
    assert client.workflow(flow.id).cancel()["state"] == "cancelled"


def test_the_builders_refuse_what_is_not_a_step():
    with pytest.raises(ValueError):
        chain()
    with pytest.raises(TypeError):
        group("wf.add")


def test_the_workflow_command_prints_and_follows_a_workflow(client, server):
    from tests.client.test_cli import lines, run as cli
    flow = client.run(chain(s("wf.nap", 2, seconds=0.3), s("wf.add", 3)))
    out = cli("workflow", flow.id, "--wait", "--wait-timeout", "30", url=server.url)
    assert out.returncode == 0, out.stderr
    [shown] = lines(out.stdout)
    assert (shown["state"], shown["result"], len(shown["jobs"])) == ("succeeded", 5, 2)
    failed = client.run(chain(s("wf.boom"), s("wf.add")))
    out = cli("workflow", failed.id, "--wait", url=server.url)
    assert out.returncode == 1 and lines(out.stdout)[0]["state"] == "failed"
    assert cli("workflow", "nope", url=server.url).returncode == 2


def test_flow_options_read_like_celerys_apply_async(client):
    # celery: add.apply_async((1,), expires=60, rate_limit is per task there; here per job too
    handle = client.submit_with("flow.echo", kwargs={"x": 1}, expires=60, rate_limit="10/m", unique_key="once")
    assert handle.result(timeout=30) == 1
    status = handle.status()
    assert status["unique_key"] == "once" and status["expires_at"] and status["rate_limit"]["per_second"] == pytest.approx(1 / 6, abs=1e-5)
    busy = client.submit_with("flow.capped", kwargs={"seconds": 2}, unique_key="report")
    again = client.submit_with("flow.capped", kwargs={"seconds": 2}, unique_key="report")
    assert again.id == busy.id, "the active job answers"

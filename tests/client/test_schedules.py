"""Schedules from the Python client and the ``greenjobs schedules`` command, against a real server."""
from datetime import datetime, timedelta, timezone

import pytest

from greenjobs_client import Conflict, InvalidRequest, NotFound
from tests.client.test_cli import lines, run
from tests.e2e.helpers import wait_until

pytestmark = pytest.mark.e2e


def test_a_schedule_made_changed_paused_run_and_deleted_from_the_client(client, marker):
    name = f"c-{marker}"
    start = datetime.now(timezone.utc) + timedelta(days=1)
    made = client.add_schedule(name, "echo", kwargs={"marker": marker}, every=3600, start_at=start, missed="once",
                               priority=4)
    assert (made["name"], made["every"], made["missed"], made["priority"]) == (name, 3600, "once", 4)
    assert made["next_fire_at"].startswith(start.strftime("%Y-%m-%dT%H:%M:%S"))
    assert name in [s["name"] for s in client.schedules()]
    with pytest.raises(Conflict):
        client.add_schedule(name, "echo", every=60)

    changed = client.update_schedule(name, cron="0 8 * * MON", timezone="Europe/Berlin", start_at=None)
    assert (changed["cron"], changed["every"], changed["timezone"]) == ("0 8 * * MON", None, "Europe/Berlin")
    assert client.schedule(name)["cron"] == "0 8 * * MON"
    assert client.pause_schedule(name)["paused"] is True
    assert client.resume_schedule(name)["paused"] is False

    job = client.run_schedule(name)
    assert job.result(timeout=30) == {"marker": marker}
    assert job.status()["schedule"]["name"] == name
    assert [j["id"] for j in client.jobs(schedule=name)] == [job.id]
    assert client.schedule(name)["last_fire_at"] is None          # run now is not a slot

    client.delete_schedule(name)
    with pytest.raises(NotFound):
        client.schedule(name)


def test_a_bad_schedule_names_its_field(client, marker):
    with pytest.raises(InvalidRequest) as bad:
        client.add_schedule(f"bad-{marker}", "echo", cron="61 * * * *")
    assert bad.value.field == "cron"
    with pytest.raises(InvalidRequest) as both:
        client.add_schedule(f"bad-{marker}", "echo", cron="* * * * *", every=5)
    assert "cron" in str(both.value) and "every" in str(both.value)


def test_an_every_second_schedule_fires_through_the_client(client, marker):
    name = f"s-{marker}"
    client.add_schedule(name, "echo", kwargs={"marker": marker}, every=1)
    try:
        wait_until(lambda: len(list(client.jobs(schedule=name, state="succeeded"))) >= 2, 20,
                   message="two slots fired")
        fired = [j["schedule"]["fire_at"] for j in client.jobs(schedule=name)]
        assert len(set(fired)) == len(fired)
    finally:
        client.delete_schedule(name)


def test_the_schedules_command(server, marker):
    name = f"cli-{marker}"
    out = run("schedules", "add", name, "echo", "--every", "3600", "--kwargs", f'{{"marker": "{marker}"}}',
              "--overlap", "skip", "--paused", url=server.url)
    assert out.returncode == 0, out.stderr
    [made] = lines(out.stdout)
    assert (made["name"], made["every"], made["overlap"], made["paused"]) == (name, 3600, "skip", True)

    out = run("schedules", "ls", url=server.url)
    assert out.returncode == 0 and name in out.stdout and "every 3600 s" in out.stdout and "paused" in out.stdout
    out = run("schedules", "ls", "--json", url=server.url)
    assert name in [s["name"] for s in lines(out.stdout)]

    assert lines(run("schedules", "resume", name, url=server.url).stdout)[0]["paused"] is False
    assert lines(run("schedules", "pause", name, url=server.url).stdout)[0]["paused"] is True

    out = run("schedules", "run", name, "--wait", "--wait-timeout", "30", url=server.url)
    assert out.returncode == 0, out.stderr
    [job] = lines(out.stdout)
    assert job["state"] == "succeeded" and job["result"] == {"marker": marker}
    out = run("schedules", "show", name, "--jobs", "5", url=server.url)
    shown = lines(out.stdout)
    assert shown[0]["name"] == name and [j["id"] for j in shown[1:]] == [job["id"]]

    out = run("schedules", "add", f"x-{marker}", "echo", "--cron", "* * 31 2 *", url=server.url)
    assert out.returncode == 2 and "cron" in out.stderr              # 31 February never comes: refused
    out = run("schedules", "add", f"x-{marker}", "echo", url=server.url)
    assert out.returncode == 2 and "--cron" in out.stderr            # neither --cron nor --every: usage

    assert run("schedules", "rm", name, url=server.url).returncode == 0
    out = run("schedules", "show", name, url=server.url)
    assert out.returncode == 2 and "not found" in out.stderr.lower()

"""The ``greenjobs`` console script against a real server: output, exit codes, bulk submission."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.client.helpers import jobs_with

pytestmark = pytest.mark.e2e

GREENJOBS = Path(sys.executable).with_name("greenjobs")     # installed by `pip install -e .`


def run(*argv, url=None, env=None, stdin=None):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GREENJOBS_")}
    environment.update(env or {})
    if url:
        environment["GREENJOBS_URL"] = url
    return subprocess.run([str(GREENJOBS), *argv], capture_output=True, text=True, env=environment, input=stdin,
                          timeout=120)


def lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_the_console_script_is_installed_and_documents_exit_codes():
    out = run("--help")
    assert out.returncode == 0
    assert "exit codes" in out.stdout and "4 wait timed out" in out.stdout


def test_submit_prints_the_job_and_wait_prints_its_result(server, marker):
    out = run("submit", "echo", "--kwargs", json.dumps({"marker": marker}), "--wait", url=server.url)
    assert out.returncode == 0, out.stderr
    [job] = lines(out.stdout)
    assert job["state"] == "succeeded" and job["result"] == {"marker": marker}

    out = run("submit", "echo", "--args", "[]", "--kwargs", "{}", "--priority", "3", url=server.url)
    assert out.returncode == 0 and lines(out.stdout)[0]["priority"] == 3


def test_url_and_token_flags_win_over_the_environment(server, proxy):
    out = run("--url", proxy.url, "--token", "t0k", "submit", "echo", url="http://127.0.0.1:9")
    assert out.returncode == 0, out.stderr
    assert proxy.seen("POST", "/jobs")[0].headers["authorization"] == "Bearer t0k"
    out = run("submit", "echo", url=proxy.url, env={"GREENJOBS_TOKEN": "from-env"})
    assert out.returncode == 0 and proxy.seen("POST", "/jobs")[1].headers["authorization"] == "Bearer from-env"
    out = run("submit", "echo", "--url", proxy.url, url="http://127.0.0.1:9")     # flags after the command too
    assert out.returncode == 0 and len(proxy.seen("POST", "/jobs")) == 3


def test_a_failed_job_exits_1_and_shows_the_remote_error(server):
    out = run("submit", "fail", "--kwargs", '{"message": "broken on purpose"}', "--wait", url=server.url)
    assert out.returncode == 1
    [job] = lines(out.stdout)
    assert job["state"] == "failed" and "broken on purpose" in job["error"]["message"]


def test_a_wait_that_runs_out_exits_4_and_leaves_the_job_running(server, client):
    out = run("submit", "sleep", "--kwargs", '{"seconds": 2}', "--wait", "--wait-timeout", "0.2", url=server.url)
    assert out.returncode == 4
    [job] = lines(out.stdout)
    assert job["state"] in ("queued", "running")
    assert client.job(job["id"]).result(30) == {"slept": 2}


def test_status_wait_cancel_retry_and_ls(server, client):
    quick = client.submit("echo", n=1)
    failing = client.submit("flaky", fail_times=1)
    slow = client.submit("sleep", seconds=30)

    out = run("wait", quick.id, failing.id, url=server.url)
    assert out.returncode == 1      # one of them failed
    assert [job["state"] for job in lines(out.stdout)] == ["succeeded", "failed"]

    out = run("status", quick.id, url=server.url)
    assert out.returncode == 0 and lines(out.stdout)[0]["result"] == {"n": 1}

    out = run("ls", "--state", "failed", "--handler", "flaky", "--json", url=server.url)
    assert out.returncode == 0 and failing.id in [job["id"] for job in lines(out.stdout)]
    out = run("ls", "--state", "failed", "--limit", "5", url=server.url)
    assert out.returncode == 0 and "flaky" in out.stdout and "exception" in out.stdout

    out = run("retry", failing.id, url=server.url)
    assert out.returncode == 0 and lines(out.stdout)[0]["id"] == failing.id
    assert run("wait", failing.id, url=server.url).returncode == 0

    out = run("cancel", slow.id, url=server.url)
    assert out.returncode == 0 and lines(out.stdout)[0]["state"] == "cancelled"
    assert run("wait", slow.id, url=server.url).returncode == 1     # cancelled counts as not done


def test_usage_errors_and_rejected_requests_exit_2(server):
    assert run("submit", "echo", "--kwargs", "{not json", url=server.url).returncode == 2
    assert run("submit", url=server.url).returncode == 2
    assert run("frobnicate", url=server.url).returncode == 2
    out = run("submit", "no.such.handler", url=server.url)
    assert out.returncode == 2 and "known handlers" in out.stderr
    out = run("status", "f" * 32, url=server.url)
    assert out.returncode == 2 and "no job" in out.stderr
    out = run("submit", "echo", "--priority", "12", url=server.url)
    assert out.returncode == 2 and "priority" in out.stderr


def test_an_unreachable_server_exits_3():
    out = run("status", "x", url="http://127.0.0.1:9")
    assert out.returncode == 3 and "cannot connect" in out.stderr


def test_bulk_submit_from_jsonl_shows_progress_and_a_summary(server, client, marker, tmp_path):
    path = tmp_path / "jobs.jsonl"
    jobs = [{"handler": "echo", "kwargs": {"marker": marker, "n": n}} for n in range(250)]
    jobs.append({"handler": "fail", "kwargs": {"message": marker}})
    path.write_text("\n".join(json.dumps(job) for job in jobs) + "\n")
    out = run("submit", "--from", str(path), "--chunk", "100", url=server.url)
    assert out.returncode == 1, out.stderr      # one job failed
    for bar in ("submitted", "running", "done", "failed"):
        assert bar in out.stderr
    assert "251/251" in out.stderr and "250/251" in out.stderr     # submitted, done
    assert "251 jobs in 3 batches" in out.stdout
    assert [row.split()[:2] for row in out.stdout.splitlines() if "succeeded" in row or "│ failed" in row] \
        == [["│", "succeeded"], ["│", "failed"]]
    assert "250" in out.stdout
    assert len(jobs_with(client, "echo", marker)) == 250


def test_bulk_submit_of_jobs_that_all_succeed_exits_0_and_no_wait_returns_at_once(server, client, marker):
    jsonl = "".join(json.dumps({"handler": "echo", "kwargs": {"marker": marker}}) + "\n" for _ in range(20))
    out = run("submit", "--from", "-", url=server.url, stdin=jsonl)
    assert out.returncode == 0, out.stderr
    out = run("submit", "--from", "-", "--no-wait", url=server.url,
              stdin=json.dumps({"handler": "echo", "kwargs": {"marker": marker, "late": True}, "delay": 60}))
    assert out.returncode == 0 and "all ended" not in out.stdout
    [late] = [job for job in jobs_with(client, "echo", marker) if job["kwargs"].get("late")]
    assert late["state"] == "scheduled"
    client.job(late["id"]).cancel()


def test_a_bad_line_stops_bulk_submission_before_anything_is_sent(server, client, marker, tmp_path):
    path = tmp_path / "jobs.jsonl"
    path.write_text(json.dumps({"handler": "echo", "kwargs": {"marker": marker}}) + "\n{\"kwargs\": {}}\n")
    out = run("submit", "--from", str(path), url=server.url)
    assert out.returncode == 2 and "line 2" in out.stderr
    assert jobs_with(client, "echo", marker) == []


def test_bulk_submit_names_its_batches_and_failed_jobs_and_batch_follows_them(server, client, marker, tmp_path):
    path = tmp_path / "jobs.jsonl"
    path.write_text("".join(json.dumps(job) + "\n" for job in (
        [{"handler": "echo", "kwargs": {"marker": marker}}] * 5 + [{"handler": "fail", "kwargs": {"message": marker}}])))
    out = run("submit", "--from", str(path), "--no-wait", "--chunk", "3", url=server.url)
    assert out.returncode in (0, 1), out.stderr         # 1 if the failing job had already failed
    batch_ids = next(line for line in out.stderr.splitlines() if line.startswith("batches: ")).split()[1:]
    assert len(batch_ids) == 2 and "greenjobs batch" in out.stderr
    followed = run("batch", *batch_ids, "--wait", url=server.url)
    assert followed.returncode == 1, followed.stderr        # the failing job
    [answer] = lines(followed.stdout)
    assert answer["counts"]["succeeded"] == 5 and answer["counts"]["failed"] == 1
    waited = run("submit", "--from", str(path), "--chunk", "3", url=server.url)
    assert waited.returncode == 1 and "failed jobs: " in waited.stderr
    failed_id = waited.stderr.split("failed jobs: ")[1].split()[0]
    assert client.get(failed_id)["handler"] == "fail"


def test_an_unknown_handler_in_a_jsonl_file_is_traced_to_its_line(server, tmp_path):
    path = tmp_path / "jobs.jsonl"
    path.write_text("".join(json.dumps(job) + "\n" for job in
                            [{"handler": "echo"}, {"handler": "echo"}, {"handler": "no.such"}, {"handler": "echo"}]))
    out = run("submit", "--from", str(path), "--chunk", "2", url=server.url)
    assert out.returncode == 2 and "line 3: unknown handler 'no.such'" in out.stderr, out.stderr


def test_handlers_health_and_ls_pages(server, client, marker):
    out = run("handlers", url=server.url)
    assert out.returncode == 0 and "echo" in out.stdout and "greenjobs.webhook" not in out.stdout
    assert any(h["name"] == "echo" for h in lines(run("handlers", "--json", url=server.url).stdout))
    health = run("health", url=server.url)
    assert health.returncode == 0 and lines(health.stdout)[0]["status"] == "ok"
    for n in range(3):
        client.submit("echo", marker=marker, n=n).wait(30)
    first = run("ls", "--limit", "2", "--json", url=server.url)
    assert first.returncode == 0 and len(lines(first.stdout)) == 2
    cursor = first.stderr.split("greenjobs ls --after ")[1].split()[0]
    second = run("ls", "--limit", "2", "--json", "--after", cursor, url=server.url)
    assert {j["id"] for j in lines(second.stdout)}.isdisjoint({j["id"] for j in lines(first.stdout)})
    assert len(lines(run("ls", "--all", "--json", url=server.url).stdout)) >= 3
    assert run("ls", "--http-timeout", "5", url=server.url).returncode == 0


def test_a_rejected_token_exits_2(make_server):
    srv = make_server(app={"greenjobs.auth.tokens": "s3cret-admin-token-0123456789:admin"}, name="auth")
    out = run("status", "x", url=srv.url, env={"GREENJOBS_TOKEN": "wrong-token-0123456789abcdef"})
    assert out.returncode == 2 and "401" in out.stderr, (out.returncode, out.stderr)


def test_ls_search_finds_a_job_by_its_arguments(server, client, marker):
    job = client.submit("echo", marker=marker, order="ord-77431")
    job.wait(30)
    out = run("ls", "--search", "ord-77431", "--json", url=server.url)
    assert out.returncode == 0 and [j["id"] for j in lines(out.stdout)] == [job.id]

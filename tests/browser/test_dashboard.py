"""The dashboard in a real headless Chromium against a real pserve: live rows, progress, actions, escaping, sign-in.

Jobs are submitted over HTTP by the test; everything else happens in the page, which is never
reloaded while a test watches it change (a marker set on ``window`` must survive).
"""
from __future__ import annotations

import re
import time

import pytest
import requests

from tests.browser.conftest import APP

pytestmark = pytest.mark.e2e

XSS = "<img src=x onerror=alert(1)>"
ADMIN, READ = "browser-admin-0123456789abcdef", "browser-read-0123456789abcdef"


# -- helpers ------------------------------------------------------------------------------

def wait(driver, condition, timeout: float = 20, message: str = ""):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition, message)


def js(driver, script: str, *args):
    return driver.execute_script(script, *args)


def open_dashboard(driver, srv, route: str = "#/overview", live: bool = True) -> None:
    """Load the page, wait for the script and (normally) the live stream, and mark the document."""
    driver.get(f"{srv.url}/{route}")
    wait(driver, lambda d: js(d, "return !!window.greenjobsDashboard"), message="the dashboard script did not run")
    if live:
        wait(driver, lambda d: js(d, "return document.getElementById('live').dataset.state") == "on",
             message="the /events stream did not open")
    js(driver, "window.__sameDocument = 'still here'")


def go(driver, route: str) -> None:
    """Client-side navigation: change the hash, as a click on a link does (no reload)."""
    js(driver, "location.hash = arguments[0]", route)


def assert_not_reloaded(driver) -> None:
    assert js(driver, "return window.__sameDocument") == "still here", "the page was reloaded"


def row_state(driver, job_id: str):
    return js(driver, "const r = document.querySelector('#jobs-table tr[data-job=\"' + CSS.escape(arguments[0]) + '\"]');"
                      "return r ? r.dataset.state : null", job_id)


def text(driver, selector: str) -> str:
    return js(driver, "const e = document.querySelector(arguments[0]); return e ? e.textContent : null", selector)


def click(driver, selector: str) -> None:
    from selenium.webdriver.common.by import By
    driver.find_element(By.CSS_SELECTOR, selector).click()


def detail_state(driver):
    return js(driver, "const b = document.querySelector('#job-state .badge'); return b ? b.dataset.state : null")


def assert_clean_console(driver, allow=()) -> None:
    """No CSP violation, no script error, no failed request except the ``allow``ed ones."""
    problems = [entry["message"] for entry in driver.get_log("browser")
                if entry["level"] == "SEVERE" and not any(a in entry["message"] for a in allow)]
    assert not problems, "browser console:\n" + "\n".join(problems)


def job_server(make_server, **app):
    return make_server(app={**APP, **app})


# -- the page itself ------------------------------------------------------------------------

def test_the_page_and_its_assets_are_served_with_strict_headers(make_server):
    srv = job_server(make_server)
    page = requests.get(srv.url + "/", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert page.headers["Cache-Control"] == "no-cache" and page.headers["X-Content-Type-Options"] == "nosniff"
    assert not re.search(r"<script(?![^>]*\ssrc=)", page.text), "no inline script"
    assert not re.search(r"\son[a-z]+\s*=", page.text), "no inline event handler"
    assert not re.search(r'(?:src|href)="(?:https?:)?//', page.text), "nothing from another origin (no CDN)"
    assets = re.findall(r'(?:src|href)="(/dashboard/static/[^"]+)"', page.text)
    assert sorted(a.split("?")[0] for a in assets) == ["/dashboard/static/app.js", "/dashboard/static/style.css"]
    for asset in assets:
        response = requests.get(srv.url + asset, timeout=10)
        assert response.status_code == 200
        assert "max-age=31536000" in response.headers["Cache-Control"], "versioned assets are cached for a year"
    script = requests.get(srv.url + next(a for a in assets if "app.js" in a), timeout=10).text
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, f"app.js must build the DOM with textContent, not {sink}"


# -- overview ------------------------------------------------------------------------------

def test_overview_shows_the_pool_workers_queues_and_live_rates(make_server, browser, screenshot):
    srv = job_server(make_server)
    open_dashboard(browser, srv)
    wait(browser, lambda d: text(d, "#pool-size") == "64", message="pool size from /health")
    wait(browser, lambda d: text(d, "#cpu-workers") == "1", timeout=40, message="one cpu worker alive")
    assert text(browser, "#broker") == "connected"
    sleepers = [srv.submit("sleep", kwargs={"seconds": 30})["id"] for _ in range(3)]
    srv.post("/jobs/batch", {"jobs": [{"handler": "echo", "kwargs": {"n": n}} for n in range(40)]})
    for _ in range(5):
        srv.submit("fail", kwargs={"message": "nope"})
    srv.submit("browser.progress", kwargs={"steps": 100, "pause": 0.2})
    wait(browser, lambda d: float(text(d, "#rate-submitted")) > 0, message="a live submitted rate")
    wait(browser, lambda d: float(text(d, "#rate-succeeded")) > 0 and float(text(d, "#rate-failed")) > 0)
    wait(browser, lambda d: text(d, "#pool-busy") == "4", message="3 sleeps and a progress job busy the pool")

    def this_server(d):
        return js(d, "const r = document.querySelector('#servers tbody tr');"
                     "return r ? [r.cells[0].textContent.endsWith('(this one)'), r.cells[2].textContent,"
                     "            r.cells[3].textContent] : null")
    wait(browser, lambda d: this_server(d) == [True, "alive", "4 / 64"], message="the cluster table, from /servers")

    def sleep_running(d):
        return js(d, "for (const tr of document.querySelectorAll('#queues tbody tr'))"
                     "  if (tr.cells[0].textContent === 'sleep') return tr.cells[3].textContent;"
                     "return null")
    wait(browser, lambda d: sleep_running(d) == "3", message="queue depths from /metrics")
    wait(browser, lambda d: len(d.find_elements("css selector", ".feed li a")) >= 10, message="recent events")
    time.sleep(1.2)      # one more chart tick, so the screenshot shows the burst
    screenshot("overview")
    for job_id in sleepers:
        srv.delete(f"/jobs/{job_id}")
    assert_not_reloaded(browser)
    assert_clean_console(browser)


# -- job list ------------------------------------------------------------------------------

def test_rows_move_live_to_succeeded_without_a_reload(make_server, browser, screenshot):
    srv = job_server(make_server)
    open_dashboard(browser, srv, "#/jobs")
    wait(browser, lambda d: text(d, "#jobs-table tbody") is not None)
    job = srv.submit("sleep", kwargs={"seconds": 1.5})
    seen = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        state = row_state(browser, job["id"])
        if state and (not seen or seen[-1] != state):
            seen.append(state)
        if state == "succeeded":
            break
        time.sleep(0.05)
    assert seen and seen[-1] == "succeeded", f"the row's states: {seen}"
    assert set(seen[:-1]) & {"queued", "running"}, f"the row was never seen before it finished: {seen}"
    attempts = js(browser, "return document.querySelector('#jobs-table tr[data-job=\"%s\"] .attempts').textContent"
                  % job["id"])
    assert attempts == "1"
    screenshot("jobs")
    assert_not_reloaded(browser)
    assert_clean_console(browser)


def test_filters_and_paging(make_server, browser):
    srv = job_server(make_server, **{"greenjobs.workers.cpu": 0})
    ids = srv.post("/jobs/batch", {"jobs": [{"handler": "echo", "kwargs": {"n": n}} for n in range(30)]}).json()["ids"]
    failed = [srv.submit("fail", kwargs={"message": f"no {n}"})["id"] for n in range(3)]
    for job_id in failed:
        assert srv.wait(job_id)["state"] == "failed"
    open_dashboard(browser, srv, "#/jobs?limit=25")

    def shown(d):
        return js(d, "return [...document.querySelectorAll('#jobs-table tbody tr[data-job]')].map(r => r.dataset.job)")
    wait(browser, lambda d: len(shown(d)) == 25)
    first_page = shown(browser)
    assert first_page[:3] == failed[::-1], "newest first"
    click(browser, ".pager a:last-child")                 # Older →
    wait(browser, lambda d: len(shown(d)) == 8)
    assert shown(browser) == ids[::-1][22:]
    click(browser, ".pager a:first-child")                # ← Newer
    wait(browser, lambda d: shown(d) == first_page)
    from selenium.webdriver.support.ui import Select
    Select(browser.find_element("css selector", "#filter-state")).select_by_value("failed")
    wait(browser, lambda d: sorted(shown(d)) == sorted(failed))
    assert "state=failed" in browser.current_url
    Select(browser.find_element("css selector", "#filter-handler")).select_by_value("echo")
    wait(browser, lambda d: shown(d) == [] and "No jobs match" in text(d, "#jobs-table tbody"))

    # a state filter takes in, live, the jobs that move into that state, and dims those that leave it
    go(browser, "#/jobs?state=running")
    wait(browser, lambda d: "No jobs match" in (text(d, "#jobs-table tbody") or ""))
    sleeper = srv.submit("sleep", kwargs={"seconds": 30})["id"]
    wait(browser, lambda d: row_state(d, sleeper) == "running")
    srv.delete(f"/jobs/{sleeper}")
    wait(browser, lambda d: row_state(d, sleeper) == "cancelled")
    assert js(browser, "return document.querySelector('#jobs-table tr[data-job=\"%s\"]').classList"
                       ".contains('stale')" % sleeper)
    assert_not_reloaded(browser)
    assert_clean_console(browser)


# -- job detail ------------------------------------------------------------------------------

def test_job_detail_shows_a_progress_bar_that_moves(make_server, browser, screenshot):
    srv = job_server(make_server)
    job = srv.submit("browser.progress", args=[], kwargs={"steps": 25, "pause": 0.2})
    open_dashboard(browser, srv, f"#/jobs/{job['id']}")
    values, shot = [], None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        value = js(browser, "const p = document.querySelector('#job-progress progress');"
                            "return p && p.hasAttribute('value') ? p.value : null")
        if value is not None and (not values or values[-1] != value):
            values.append(value)
        if shot is None and value is not None and 0.4 <= value <= 0.8:
            shot = screenshot("job-detail")
        if detail_state(browser) == "succeeded":
            break
        time.sleep(0.05)
    assert detail_state(browser) == "succeeded"
    inside = [v for v in values if 0 < v < 1]
    assert len(inside) >= 3, f"the bar should move through several values, saw {values}"
    assert values == sorted(values), f"progress never goes back: {values}"
    wait(browser, lambda d: text(d, "#job-progress-value") == "100%")
    assert text(browser, "#job-progress-message") == " · step 25 of 25"
    wait(browser, lambda d: text(d, "#job-result") is not None and '"steps": 25' in text(d, "#job-result"))
    assert '"pause": 0.2' in text(browser, "#job-kwargs")
    assert shot is not None
    assert_not_reloaded(browser)
    assert_clean_console(browser)


def test_a_failed_job_shows_every_attempts_error_and_traceback(make_server, browser, screenshot):
    srv = job_server(make_server)
    job = srv.submit("flaky", kwargs={"fail_times": 5}, max_retries=1)
    assert srv.wait(job["id"])["state"] == "failed"
    open_dashboard(browser, srv, f"#/jobs/{job['id']}")
    wait(browser, lambda d: detail_state(d) == "failed")
    attempts = js(browser, "return [...document.querySelectorAll('#job-errors .attempt')].map(a => a.textContent)")
    assert len(attempts) == 2
    assert "attempt 1 of a flaky job fails on purpose" in attempts[0]
    assert "attempt 2 of a flaky job fails on purpose" in attempts[1]
    assert "Traceback" in text(browser, ".error-view[data-attempt='last'] pre.traceback")
    assert text(browser, "#job-attempts") == "2 of 2"
    assert js(browser, "return document.getElementById('retry').hidden") is False
    assert js(browser, "return document.getElementById('cancel').hidden") is True
    screenshot("job-failed")
    assert_clean_console(browser)


def test_cancel_a_running_job_from_the_page(make_server, browser):
    srv = job_server(make_server)
    job = srv.submit("sleep", kwargs={"seconds": 60})
    open_dashboard(browser, srv, f"#/jobs/{job['id']}")
    wait(browser, lambda d: detail_state(d) == "running")
    assert js(browser, "return document.getElementById('retry').hidden") is True
    click(browser, "#cancel")
    wait(browser, lambda d: detail_state(d) == "cancelled")
    assert srv.get(f"/jobs/{job['id']}").json()["state"] == "cancelled"
    wait(browser, lambda d: js(d, "return document.getElementById('cancel').hidden"))
    assert_not_reloaded(browser)
    assert_clean_console(browser)


# -- failed view ------------------------------------------------------------------------------

def test_retry_failed_jobs_from_the_failed_view(make_server, browser, screenshot):
    srv = job_server(make_server)
    flaky = [srv.submit("flaky", kwargs={"fail_times": 1})["id"] for _ in range(2)]
    hopeless = srv.submit("fail", kwargs={"message": "always"})["id"]
    done = srv.submit("echo", kwargs={})["id"]
    for job_id in [*flaky, hopeless]:
        assert srv.wait(job_id)["state"] == "failed"
    assert srv.wait(done)["state"] == "succeeded"
    open_dashboard(browser, srv, "#/failed")
    wait(browser, lambda d: all(row_state(d, i) == "failed" for i in [*flaky, hopeless]))
    assert row_state(browser, done) is None, "the failed view lists failed jobs only"
    assert text(browser, "#selected-count") == "3 failed on this page"
    screenshot("failed")

    # one by its checkbox
    js(browser, "document.querySelector('#jobs-table tr[data-job=\"%s\"] input.pick').click()" % flaky[0])
    assert text(browser, "#retry-selected") == "Retry selected (1)"
    click(browser, "#retry-selected")
    wait(browser, lambda d: row_state(d, flaky[0]) == "succeeded", message="the retried job succeeds, live")
    assert row_state(browser, flaky[1]) == "failed"

    # the rest: every failed row of the page
    click(browser, "#retry-all")
    wait(browser, lambda d: row_state(d, flaky[1]) == "succeeded")
    wait(browser, lambda d: js(d, "return document.querySelector('#jobs-table tr[data-job=\"%s\"] .attempts')"
                                  ".textContent" % hopeless) == "2", message="the hopeless job failed again")
    assert row_state(browser, hopeless) == "failed"
    for job_id in flaky:
        after = srv.get(f"/jobs/{job_id}").json()
        assert after["state"] == "succeeded" and after["attempts"] == 2
    assert srv.get(f"/jobs/{hopeless}").json()["attempts"] == 2
    assert_not_reloaded(browser)
    assert_clean_console(browser)


# -- escaping ---------------------------------------------------------------------------------

def test_job_data_is_shown_as_text_never_as_markup(make_server, browser):
    srv = job_server(make_server)
    echo = srv.submit("echo", kwargs={"html": XSS, "<script>alert(2)</script>": "<b>bold</b>"})
    assert srv.wait(echo["id"])["state"] == "succeeded"
    failing = srv.submit("fail", kwargs={"message": XSS})
    assert srv.wait(failing["id"])["state"] == "failed"

    open_dashboard(browser, srv, f"#/jobs/{echo['id']}")
    wait(browser, lambda d: text(d, "#job-result") is not None)
    assert XSS in text(browser, "#job-kwargs") and XSS in text(browser, "#job-result")
    assert "<script>alert(2)</script>" in text(browser, "#job-kwargs")
    assert "<b>bold</b>" in text(browser, "#job-result")

    def markup(d):
        return js(d, "return document.querySelectorAll('#view img, #view script, #view b, #view iframe').length")
    assert markup(browser) == 0

    go(browser, f"#/jobs/{failing['id']}")
    wait(browser, lambda d: detail_state(d) == "failed")
    assert XSS in text(browser, ".error-view[data-attempt='last'] .error-text")
    assert markup(browser) == 0
    go(browser, "#/failed")
    wait(browser, lambda d: row_state(d, failing["id"]) == "failed")
    assert XSS in text(browser, "#jobs-table .error-text")
    assert markup(browser) == 0

    from selenium.common.exceptions import NoAlertPresentException
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text
    assert_not_reloaded(browser)
    assert_clean_console(browser)


# -- access control -----------------------------------------------------------------------------

def test_sign_in_with_a_token_then_act_with_the_csrf_token(make_server, browser, screenshot):
    srv = job_server(make_server, **{"greenjobs.auth.tokens": f"{ADMIN}:admin {READ}:read",
                                     "greenjobs.workers.cpu": 0})
    if requests.get(srv.url + "/session", timeout=10).status_code == 404:
        pytest.skip("this server has no /session yet (server/security.py): the dashboard treats that as auth off")
    srv.http.headers["Authorization"] = f"Bearer {ADMIN}"
    open_dashboard(browser, srv, "#/overview", live=False)
    wait(browser, lambda d: js(d, "return !document.getElementById('signin').hidden"), message="the sign-in form")
    assert js(browser, "return document.getElementById('view').hidden") is True
    screenshot("sign-in")

    token = browser.find_element("css selector", "#token")
    token.send_keys("not-a-token-at-all")
    click(browser, "#signin-form button[type=submit]")
    wait(browser, lambda d: text(d, "#signin-error") == "That token is not valid.")
    token.clear()
    token.send_keys(ADMIN)
    click(browser, "#signin-form button[type=submit]")
    wait(browser, lambda d: js(d, "return document.getElementById('signin').hidden"))
    wait(browser, lambda d: "admin" in text(d, "#who"))
    wait(browser, lambda d: js(d, "return document.getElementById('live').dataset.state") == "on")
    assert "greenjobs_session" not in js(browser, "return document.cookie"), "the session cookie is HttpOnly"

    # live rows and a cancel: DELETE with the session cookie needs the X-CSRF-Token header
    job = srv.submit("sleep", kwargs={"seconds": 60})
    go(browser, "#/jobs")
    wait(browser, lambda d: row_state(d, job["id"]) == "running")
    go(browser, f"#/jobs/{job['id']}")
    wait(browser, lambda d: detail_state(d) == "running")
    click(browser, "#cancel")
    wait(browser, lambda d: detail_state(d) == "cancelled")
    assert srv.get(f"/jobs/{job['id']}").json()["state"] == "cancelled"

    # signed out: the form again; a read-only token sees the job but may not cancel it
    click(browser, "#signout")
    wait(browser, lambda d: js(d, "return !document.getElementById('signin').hidden"))
    other = srv.submit("sleep", kwargs={"seconds": 60})
    browser.find_element("css selector", "#token").send_keys(READ)
    click(browser, "#signin-form button[type=submit]")
    wait(browser, lambda d: "read" in (text(d, "#who") or ""))
    go(browser, f"#/jobs/{other['id']}")
    wait(browser, lambda d: detail_state(d) == "running")
    assert js(browser, "return document.getElementById('cancel').disabled") is True
    srv.delete(f"/jobs/{other['id']}")
    assert_not_reloaded(browser)
    assert_clean_console(browser, allow=("/session - Failed to load resource: the server responded with a status "
                                         "of 401",))


# -- schedules --------------------------------------------------------------------------------

def schedule_row(driver, name: str, selector: str = ""):
    return js(driver, "const r = document.querySelector('#schedules-table tr[data-schedule=\"' + CSS.escape(arguments[0])"
                      " + '\"]'); if (!r) return null; const e = arguments[1] ? r.querySelector(arguments[1]) : r;"
                      " return e ? (arguments[1] ? e.textContent : r.dataset.paused) : null", name, selector)


def test_schedules_page_lists_pauses_resumes_and_runs_now(make_server, browser, screenshot):
    srv = job_server(make_server, **{"greenjobs.workers.cpu": 0, "greenjobs.schedules": "tick",
                                     "greenjobs.schedule.tick.handler": "echo",
                                     "greenjobs.schedule.tick.every": "1",
                                     "greenjobs.schedule.tick.kwargs": '{"from": "ini"}'})
    made = srv.post("/schedules", {"name": "digest", "handler": "echo", "kwargs": {"note": XSS},
                                        "cron": "0 8 * * MON", "timezone": "Europe/Berlin", "paused": True})
    assert made.status_code == 201, made.text
    open_dashboard(browser, srv, "#/schedules")
    wait(browser, lambda d: schedule_row(d, "digest") == "true" and schedule_row(d, "tick") == "false")
    assert schedule_row(browser, "digest", "td.when") == "cron 0 8 * * MON · Europe/Berlin"
    assert schedule_row(browser, "tick", "td.when") == "every 1 s"
    wait(browser, lambda d: "succeeded" in (schedule_row(d, "tick", ".last-job") or ""),
         message="tick's last job shows, with its state")
    screenshot("schedules")

    # pause the running one, resume the paused one: the buttons act as admin, the list follows
    click(browser, '#schedules-table tr[data-schedule="tick"] .schedule-toggle')
    wait(browser, lambda d: schedule_row(d, "tick") == "true")
    assert srv.get("/schedules/tick").json()["paused"] is True
    click(browser, '#schedules-table tr[data-schedule="digest"] .schedule-toggle')
    wait(browser, lambda d: schedule_row(d, "digest") == "false")
    resumed = srv.get("/schedules/digest").json()
    assert resumed["paused"] is False and resumed["next_fire_at"]

    # one schedule's page: its facts, template (as text), run now, its recent jobs
    go(browser, "#/schedules/digest")
    wait(browser, lambda d: text(d, "#schedule-facts") is not None)
    assert "cron 0 8 * * MON" in text(browser, "#schedule-facts")
    assert XSS in text(browser, "main") and not js(browser, "return document.querySelector('main img')")
    click(browser, ".page-actions .schedule-run")
    wait(browser, lambda d: js(d, "return document.querySelectorAll('#schedule-jobs tr[data-job]').length") == 1,
         message="the run-now job is listed")
    [job] = srv.get("/jobs", params={"schedule": "digest"}).json()["jobs"]
    assert job["schedule"] == {"name": "digest", "fire_at": None} and job["kwargs"] == {"note": XSS}
    wait(browser, lambda d: "run now" in text(d, "#schedule-jobs"))
    screenshot("schedule")
    click(browser, f'#schedule-jobs tr[data-job="{job["id"]}"] a')
    wait(browser, lambda d: text(d, "#job-schedule") is not None)
    assert text(browser, "#job-schedule").startswith("digest")
    assert srv.get("/schedules/digest").json()["last_fire_at"] is None, "run now is not a slot"
    assert_not_reloaded(browser)
    assert_clean_console(browser)


# -- workflows --------------------------------------------------------------------------------

def test_a_steps_page_shows_its_workflow_and_follows_it(make_server, browser, screenshot):
    srv = job_server(make_server, **{"greenjobs.workers.cpu": 0,
                                     "greenjobs.handlers": "greenjobs.handlers.builtin tests.browser.browser_handlers"
                                                           " tests.workflow_handlers"})
    made = srv.post("/workflows", {"chain": [{"handler": "wf.nap", "kwargs": {"x": 2, "seconds": 1.5}},
                                             {"handler": "wf.add", "args": [3]}, {"handler": "wf.boom"},
                                             {"handler": "wf.add"}]})
    assert made.status_code == 202, made.text
    steps = [j["id"] for j in made.json()["jobs"]]
    open_dashboard(browser, srv, f"#/jobs/{steps[1]}")
    wait(browser, lambda d: text(d, "#workflow-steps") is not None, message="the workflow's steps")
    step_state = "return [...document.querySelectorAll('#workflow-steps tr[data-job]')].map(r => r.querySelector('.badge').dataset.state)"
    assert js(browser, step_state)[1:] == ["scheduled", "scheduled", "scheduled"]
    assert "waiting for 1" in text(browser, "#workflow-steps")
    assert js(browser, "return document.querySelector('#workflow-steps tr.current').dataset.job") == steps[1]
    wait(browser, lambda d: js(d, step_state) == ["succeeded", "succeeded", "failed", "cancelled"], 30,
         message="the page follows the workflow to its end")
    assert "upstream failed" in text(browser, "#workflow-steps")
    assert js(browser, "return document.getElementById('workflow-steps').dataset.state") == "failed"
    screenshot("workflow")
    assert_not_reloaded(browser)
    assert_clean_console(browser)


# -- flow control -------------------------------------------------------------------------------

def test_a_job_page_says_why_the_job_waits_and_follows_it_when_it_starts(make_server, browser, screenshot):
    srv = job_server(make_server, **{"greenjobs.workers.cpu": 0,
                                     "greenjobs.handlers": "greenjobs.handlers.builtin tests.browser.browser_handlers"
                                                           " tests.flow_handlers"})
    busy = [srv.submit("flow.capped", kwargs={"seconds": 2.5}) for _ in range(2)]
    waiting = srv.submit("flow.capped", kwargs={"seconds": 0.1}, unique_key="nightly-report")
    open_dashboard(browser, srv, f"#/jobs/{waiting['id']}")
    wait(browser, lambda d: text(d, "#job-waiting") is not None, message="why it waits")
    assert "max_running" in text(browser, "#job-waiting")
    assert "max 2 running" in text(browser, ".facts") and "unique key nightly-report" in text(browser, ".facts")
    screenshot("job-waiting")
    wait(browser, lambda d: detail_state(d) == "succeeded", 30, message="it ran once a slot was free")
    wait(browser, lambda d: text(d, "#job-waiting") is None, message="no longer waiting")
    assert all(srv.wait(j["id"], 10)["state"] == "succeeded" for j in busy)
    assert_not_reloaded(browser)
    assert_clean_console(browser)


def test_the_handlers_page_shows_a_rerouted_handler(make_server, browser, screenshot):
    srv = job_server(make_server, **{"greenjobs.workers.cpu": 1,
                                     "greenjobs.handlers": "greenjobs.handlers.builtin tests.browser.browser_handlers"
                                                           " tests.hub_handlers tests.flow_handlers"})
    srv.wait(srv.submit("hub.auto", kwargs={"seconds": 0.3})["id"], 30)      # kind auto: rerouted at its first block
    open_dashboard(browser, srv, "#/handlers")
    row = "#handlers-table tr[data-handler='hub.auto']"
    wait(browser, lambda d: js(d, f"const r = document.querySelector(\"{row}\"); return r && r.dataset.kind") == "cpu",
         message="the rerouted handler")
    assert "rerouted" in text(browser, f"{row} .runs-in") and "worker processes" in text(browser, f"{row} .runs-in")
    assert "blocked the event loop" in text(browser, row)
    assert "5/s" in text(browser, "#handlers-table tr[data-handler='flow.limited']")
    screenshot("handlers")
    assert_not_reloaded(browser)
    assert_clean_console(browser)


def test_the_servers_page_and_a_runtime_column(make_server, browser, screenshot):
    srv = job_server(make_server)
    done = srv.wait(srv.submit("sleep", kwargs={"seconds": 0.3})["id"], 30)
    open_dashboard(browser, srv, "#/servers")
    wait(browser, lambda d: js(d, "return document.querySelectorAll('#servers-table tr[data-alive=true]').length") == 1,
         message="this server, alive")
    assert f"{srv.proc.pid}" in text(browser, "#servers-table") and "(this one)" in text(browser, "#servers-table")
    assert "1 alive" in text(browser, "#servers-totals")
    screenshot("servers")
    go(browser, "#/jobs")
    cell = f"#jobs-table tr[data-job='{done['id']}'] td.runtime"
    wait(browser, lambda d: text(d, cell) not in (None, "—"), message="the job's runtime")
    assert text(browser, cell).endswith("ms") or text(browser, cell).endswith("s")
    other = srv.wait(srv.submit("echo", kwargs={"order": "needle-4711"})["id"], 30)
    go(browser, "#/jobs?q=needle-4711")
    wait(browser, lambda d: js(d, "return [...document.querySelectorAll('#jobs-table tr[data-job]')].map(r => "
                                  "r.dataset.job)") == [other["id"]], message="the search's one job")
    assert js(browser, "return document.getElementById('filter-q').value") == "needle-4711"
    go(browser, f"#/jobs/{done['id']}")
    wait(browser, lambda d: text(d, "#job-ran-by") is not None, message="who ran it")
    assert f"pid {srv.proc.pid} · a server" in text(browser, "#job-ran-by")
    assert_not_reloaded(browser)
    assert_clean_console(browser)


def test_the_overview_has_history_on_load(make_server, browser, screenshot):
    srv = job_server(make_server)
    answer = srv.post("/jobs/batch", {"jobs": [{"handler": "echo", "kwargs": {"n": n}} for n in range(30)]
                                      + [{"handler": "fail", "kwargs": {"message": "no"}, "max_retries": 0}] * 3})
    assert answer.status_code == 202, answer.text
    ids = answer.json()["ids"]
    for job_id in ids:
        srv.wait(job_id, 30)
    time.sleep(1.1)                    # the jobs' last second is a whole one before the page opens

    def feed(d):
        return js(d, "return [...document.querySelectorAll('.feed li a')].map(a => a.getAttribute('href').split('/').pop())")

    def from_ledger(d):
        return js(d, "return document.querySelectorAll('.feed li.from-ledger').length")

    # no stream was open while they ran, so the server kept no events: the feed shows the ledger's newest jobs
    open_dashboard(browser, srv)
    wait(browser, lambda d: from_ledger(d) == 12, message="the newest jobs of the ledger")
    assert set(feed(browser)) <= set(ids) and "newest jobs in the ledger" in text(browser, ".feed")
    wait(browser, lambda d: js(d, "return Number(document.getElementById('history-chart').dataset.submitted)") == 33,
         message="the 15-minute chart, from /throughput")
    assert js(browser, "return Number(document.getElementById('history-chart').dataset.succeeded)") == 30
    assert js(browser, "return Number(document.getElementById('history-chart').dataset.failed)") == 3
    assert "33 submitted, 30 succeeded, 3 failed" in text(browser, "#history-note")
    # the minute before the page opened is in the rates too (seeded from /throughput, not from live events)
    seeded = js(browser, "return ['submitted', 'succeeded', 'failed'].map(n => "
                         "greenjobsDashboard.rates.series(n).reduce((a, b) => a + b, 0))")
    assert seeded == [33, 30, 3], seeded

    # with this page's stream open the server keeps its events: a reload replays them, and so does a restart
    more = srv.post("/jobs/batch", {"jobs": [{"handler": "echo", "kwargs": {"m": n}} for n in range(5)]}).json()["ids"]
    for job_id in more:
        srv.wait(job_id, 30)
    wait(browser, lambda d: set(more) <= set(feed(d)), message="the new jobs' events, live")
    open_dashboard(browser, srv)
    wait(browser, lambda d: set(more) <= set(feed(d)), message="the recent events, replayed on load")
    assert from_ledger(browser) == 0 and len(feed(browser)) == 12
    screenshot("overview-history")
    assert_not_reloaded(browser)
    assert_clean_console(browser)
    srv.stop()
    srv.start()
    open_dashboard(browser, srv)
    wait(browser, lambda d: set(more) <= set(feed(d)), message="the events replayed after a restart")
    assert from_ledger(browser) == 0
    assert_clean_console(browser, allow=("ERR_CONNECTION_REFUSED",))     # the old page, while the server was down


def test_an_admin_resizes_and_restarts_cpu_workers_from_the_servers_page(make_server, browser, screenshot):
    srv = job_server(make_server)
    open_dashboard(browser, srv, "#/servers")
    row = f"#servers-table tr[data-owner][data-alive=true]"
    wait(browser, lambda d: (text(d, row + " td.cpu") or "").startswith("1 / 1"), timeout=40, message="one cpu worker")
    srv.post("/jobs/batch", {"jobs": [{"handler": "echo", "kwargs": {"n": n}} for n in range(20)]})
    wait(browser, lambda d: not (text(d, row + " td.rate") or "0").startswith("0.00"), message="a submitted rate")
    js(browser, "const i = document.querySelector(arguments[0]); i.value = '2'", row + " input.resize")
    click(browser, row + " button.resize")
    wait(browser, lambda d: "resized from 1 to 2 workers" in (text(d, "#flash") or ""), message="the answer")
    wait(browser, lambda d: (text(d, row + " td.cpu") or "").startswith("2 / 2"), timeout=60, message="two workers")
    wait(browser, lambda d: "resize to 2" in text(d, row + " td.control")
         and "resized from 1 to 2" in text(d, row + " td.control"), message="the last request, from the servers table")
    health = srv.get("/health").json()
    assert health["cpu"]["workers"] == 2, health["cpu"]
    pids = srv.get("/servers").json()["servers"][0]["cpu"]
    click(browser, row + " button.restart")
    wait(browser, lambda d: "restarting 2 workers one at a time" in (text(d, "#flash") or ""), message="the restart")
    wait(browser, lambda d: "2 restarts" in (text(d, row + " td.cpu") or ""), timeout=90, message="both restarted")
    wait(browser, lambda d: (text(d, row + " td.cpu") or "").startswith("2 / 2")
         and "restarting" not in text(d, row + " td.cpu"), timeout=60, message="the restart done")
    assert srv.get("/servers").json()["servers"][0]["cpu"]["restarts"] == pids["restarts"] + 2
    js(browser, "const i = document.querySelector(arguments[0]); i.value = '300'", row + " input.resize")
    click(browser, row + " button.resize")
    wait(browser, lambda d: "whole number from 0 to 256" in (text(d, "#flash") or ""), message="a size refused")
    screenshot("servers-admin")
    assert_not_reloaded(browser)
    assert_clean_console(browser)


def test_a_reader_sees_no_worker_controls(make_server, browser):
    srv = job_server(make_server, **{"greenjobs.auth.tokens": f"{ADMIN}:admin {READ}:read"})
    open_dashboard(browser, srv, "#/servers", live=False)
    wait(browser, lambda d: js(d, "return !document.getElementById('signin').hidden"), message="the sign-in form")
    browser.find_element("css selector", "#token").send_keys(READ)
    click(browser, "#signin-form button[type=submit]")
    wait(browser, lambda d: "read" in (text(d, "#who") or ""), message="signed in as a reader")
    wait(browser, lambda d: js(d, "return document.querySelectorAll('#servers-table tr[data-owner]').length") == 1,
         message="the servers table")
    assert js(browser, "return document.querySelectorAll('#servers-table button, #servers-table input').length") == 0
    headers = js(browser, "return [...document.querySelectorAll('#servers-table th')].map(t => t.textContent)")
    assert "cpu workers: admin" not in headers and "last request" in headers
    reader = {"Authorization": "Bearer " + READ}
    owner = requests.get(srv.url + "/servers", headers=reader, timeout=10).json()["servers"][0]["owner"]
    refused = requests.post(f"{srv.url}/servers/{owner}/workers", json={"size": 2}, headers=reader, timeout=10)
    assert refused.status_code == 403, refused.text
    assert_clean_console(browser, allow=("status of 401",))

"""``python -m bench [--quick] [--only W1,W3] [--peers celery,dramatiq] [--runs N] [--json F]``.

Measures greenjobs, its peers (Celery, Dramatiq, Huey, RQ) and the machine's limits on issue 6's
workloads in one run, and prints one Markdown table (and writes JSON). It starts everything it
measures: greenjobs from a copy of config.ini on a free port (embedded broker, and RabbitMQ for the
cpu workloads), each peer's workers, the floors and the hello-world ceilings; then stops them.
"""
from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import datetime  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

from bench import floors, report, workloads as wl  # noqa: E402
from bench.peers import BROKERS, NAMES as PEERS  # noqa: E402
from tests.support import ServerProcess, free_port, write_ini  # noqa: E402

ALL = ("W1", "W1b", "W2", "W3", "W4", "W5", "W6")
EXTRA = ("W1s", "D", "W7")                # greenjobs-only variants, run when named in --only
FULL = {"W1": 10_000, "W1s": 10_000, "W1b": 10_000, "W2": 200, "W3": 10_000, "W4": 1000, "W5": 10_000,
        "W6": 10_000, "D": 100, "W7": 10_000}
QUICK = {"W1": 1000, "W1s": 1000, "W1b": 1000, "W2": 20, "W3": 1000, "W4": 100, "W5": 1000, "W6": 1000, "D": 20, "W7": 1000}
UNITS = {"wall": "s", "peak_rss": "MB", "rss_per_job": "KB", "single": "jobs/s", "batch": "jobs/s",
         "drain": "jobs/s", "client64": "jobs/s", "client64 coalesced": "jobs/s"}
RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"
POSTGRES = "postgresql://postgres@127.0.0.1:5432"
PEER_PACKAGES = {"celery": "celery", "dramatiq": "dramatiq", "huey": "huey", "rq": "rq"}


def answers(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


class Run:
    """Collects rows; ``measure`` repeats a workload and records one row per metric it returns."""

    def __init__(self, runs: int, sizes: dict):
        self.runs, self.sizes, self.rows = runs, sizes, []

    def measure(self, workload: str, system: str, config: str, fn, *args, units=None) -> None:
        samples = []
        try:
            for _ in range(self.runs):
                samples.append(fn(*args))
        except Exception as exc:
            traceback.print_exc()
            self.rows.append(report.row(workload, "-", system, config, "", [], self.sizes[workload],
                                        error=f"{type(exc).__name__}: {exc}"[:300]))
            return
        for metric in samples[0]:
            unit = (units or {}).get(metric) or UNITS.get(metric, "ms")
            self.rows.append(report.row(workload, metric, system, config, unit, [s[metric] for s in samples],
                                        self.sizes[workload]))
        print(f"  {workload:4} {system:10} " + ", ".join(
            f"{m}={samples[-1][m]:.4g}" for m in samples[-1]), file=sys.stderr, flush=True)


def limits(run: Run, chosen, sizes, iterations, url) -> None:
    if "W1" in chosen:
        run.measure("W1", "limit", "bare gevent.pool.Pool(1000) of gevent.sleep(0.1)",
                    lambda: {"wall": (f := floors.measure("sleep", sizes["W1"]))["wall"], "peak_rss": f["peak_rss_mb"]})
    if "W1b" in chosen:
        run.measure("W1b", "limit", "bare gevent.pool.Pool(1000) + one urllib3 PoolManager",
                    lambda: {"wall": (f := floors.measure("get", sizes["W1b"], url))["wall"], "peak_rss": f["peak_rss_mb"]})
    if "W2" in chosen:
        run.measure("W2", "limit", f"multiprocessing.Pool({os.cpu_count()}).map, chunksize 1",
                    lambda: {"wall": floors.measure("pbkdf2", sizes["W2"], iterations)["wall"]})
    if "W6" in chosen:
        run.measure("W6", "ceiling", "hello world, 64 keep-alive clients (W3's client)", lambda: {
            "pywsgi hello": wl.ceiling("pywsgi", sizes["W6"]),
            "waitress hello": wl.ceiling("waitress", sizes["W6"]),
            "pyramid hello": wl.ceiling("pyramid", sizes["W6"])},
            units={m: "req/s" for m in ("pywsgi hello", "waitress hello", "pyramid hello")})


def greenjobs(run: Run, chosen, sizes, iterations, url, folder: Path, args) -> None:
    server = {"max_connections": 20000}
    replace = False
    runner = "gevent.pywsgi"
    if args.server == "waitress":
        server, replace, runner = {"use": "egg:waitress#main", "threads": 1100, "connection_limit": 2000,
                                   "backlog": 2048}, True, "waitress threads=1100"
    # W1b's http.get calls a local server on a random port: allow loopback's ports (a bare host means 80 and 443)
    local = {"greenjobs.http.allowed_hosts": "127.0.0.1:*", **dict(item.split("=", 1) for item in args.set)}
    plan = [("embedded", dict(local), [w for w in chosen if w not in ("W6", "W7")])]
    cpu_chosen = [w for w in chosen if w in ("W2", "W4")]
    if args.broker in ("rabbitmq", "both") and cpu_chosen:
        if answers("127.0.0.1", 5672):
            plan.append(("RabbitMQ", {**local, "greenjobs.broker.url": RABBITMQ,
                                      "greenjobs.broker.namespace": f"gjbench-{int(time.time())}"}, cpu_chosen))
        else:
            for w in cpu_chosen:
                run.rows.append(report.row(w, "-", "greenjobs", f"{runner}, RabbitMQ", "", [], sizes[w],
                                           note="skipped: nothing answers on 127.0.0.1:5672"))
    if args.broker == "rabbitmq":
        plan[0] = ("embedded", {}, [w for w in plan[0][2] if w not in cpu_chosen])
    store_chosen = [w for w in chosen if w in ("W1", "W3", "W4")]
    if args.store in ("postgres", "both") and store_chosen:
        plan.append(("embedded", {**local, "greenjobs.store.url": postgres_database(folder)}, store_chosen))
        if args.store == "postgres":
            plan[0] = (plan[0][0], plan[0][1], [w for w in plan[0][2] if w not in store_chosen])
    for broker, app, todo in plan:
        if not todo:
            continue
        store = "PostgreSQL store" if "greenjobs.store.url" in app else "store sync=full"
        config = f"{runner}, pool 1000, {broker} broker, {os.cpu_count()} cpu workers, {store}"
        ini = write_ini(folder / f"greenjobs-{broker}", app, server=server, replace_server=replace)
        try:
            srv = ServerProcess(ini).start()
        except Exception as exc:
            for w in todo:
                run.rows.append(report.row(w, "-", "greenjobs", config, "", [], sizes[w],
                                           error=f"server did not start: {str(exc)[-300:]}"))
            continue
        try:
            for w in todo:
                if w == "W1":
                    run.measure(w, "greenjobs", config + ", /jobs/batch", wl.w1, srv, sizes[w])
                elif w == "W1s":
                    run.measure(w, "greenjobs", config + ", POST + ?wait per job", wl.w1_single, srv, sizes[w])
                elif w == "W1b":
                    run.measure(w, "greenjobs", config + ", http.get via /jobs/batch", wl.w1b, srv, sizes[w], url)
                elif w == "W2":
                    run.measure(w, "greenjobs", config, wl.w2, srv, sizes[w], iterations)
                elif w == "W3":
                    run.measure(w, "greenjobs", config, wl.w3, srv, sizes[w])
                elif w == "W4":
                    kinds = ("echo", "echo 1rt", "cpu", "cpu 1rt") if broker == "embedded" else ("cpu", "cpu 1rt")
                    run.measure(w, "greenjobs", config, wl.w4, srv, sizes[w], kinds)
                elif w == "W5":
                    run.measure(w, "greenjobs", config + f", W1 ({sizes['W1']}) + W2 ({sizes['W2']}) at once",
                                wl.w5, srv, sizes["W1"], sizes["W2"], iterations)
                elif w == "D":
                    run.measure(w, "greenjobs", config, wl.dispatch, srv, sizes[w])
        finally:
            srv.stop()


def cluster(run: Run, sizes, folder: Path, args) -> None:
    """W7: one server process, then two on one ledger (PostgreSQL with --store postgres or both; one SQLite
    file with sqlite or both), each a fresh ledger, io only (no cpu workers)."""
    stores = []
    if args.store in ("postgres", "both"):
        stores.append(("PostgreSQL store", lambda: {"greenjobs.store.url": postgres_database(folder)}))
    if args.store in ("sqlite", "both"):
        stores.append(("one SQLite store", lambda: {"greenjobs.store.url": f"sqlite:///{folder}/w7-{time.time_ns()}.sqlite"}))
    for label, ledger in stores:
        for count in (1, 2):
            app = {**ledger(), "greenjobs.workers.cpu": 0}
            config = f"{count} server process{'es' if count > 1 else ''}, pool 1000 each, {label}"
            servers = []
            try:
                for i in range(count):
                    ini = write_ini(folder / f"w7-{label[:3]}-{count}-{i}", app, server={"max_connections": 20000})
                    servers.append(ServerProcess(ini).start())
                run.measure("W7", "greenjobs", config, wl.w7, servers, sizes["W7"])
            except Exception as exc:
                run.rows.append(report.row("W7", "-", "greenjobs", config, "", [], sizes["W7"],
                                           error=f"{type(exc).__name__}: {str(exc)[-300:]}"))
            finally:
                for srv in servers:
                    srv.stop()


def postgres_database(folder: Path) -> str:
    """A fresh database on the local PostgreSQL (127.0.0.1:5432) for the PostgreSQL store rows; its name is
    left in ``folder`` so ``main`` drops it at the end."""
    import psycopg
    name = f"gjbench_{int(time.time())}_{os.getpid()}"
    with psycopg.connect(POSTGRES + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    (folder / "postgres-databases").open("a").write(name + "\n")
    return f"{POSTGRES}/{name}"


def drop_postgres_databases(folder: Path) -> None:
    listed = folder / "postgres-databases"
    if not listed.exists():
        return
    import psycopg
    with psycopg.connect(POSTGRES + "/postgres", autocommit=True) as conn:
        for name in listed.read_text().split():
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def peers(run: Run, chosen, names, iterations, url, folder: Path, args) -> None:
    todo = [w for w in chosen if w in ("W1", "W1b", "W2", "W3", "W4")]
    if not todo:
        return
    for name in names:
        broker, host, port = BROKERS[name]
        skip = None
        if importlib.util.find_spec(PEER_PACKAGES[name]) is None:
            skip = f"skipped: {name} not installed (pip install -e '.[bench]')"
        elif not answers(host, port):
            skip = f"skipped: {broker} does not answer on {host}:{port}"
        if skip:
            run.rows.append(report.row("*", "-", name, "", "", [], 0, note=skip))
            print(f"  {name}: {skip}", file=sys.stderr, flush=True)
            continue
        cmd = [sys.executable, "-m", "bench.peers", name, "--only", ",".join(todo), "--runs", str(run.runs),
               "--iterations", str(iterations), "--url", url or "http://127.0.0.1:1/", "--logs", str(folder / name)]
        if args.quick:
            cmd.append("--quick")
        print(f"  {name}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
        out = None
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, env=wl._env(), cwd=wl.ROOT, timeout=3600)
            rows = json.loads(out.stdout.strip().splitlines()[-1])
        except Exception as exc:
            tail = out.stderr[-500:] if out is not None else ""
            run.rows.append(report.row("*", "-", name, "", "", [], 0, error=f"{type(exc).__name__}: {exc} {tail}"[:400]))
            continue
        sys.stderr.write("".join(line + "\n" for line in out.stderr.splitlines()[-20:] if "Error" in line))
        run.rows.extend(rows)


def machine() -> dict:
    model = ""
    try:
        model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    except OSError:
        pass
    versions = {}
    from importlib.metadata import PackageNotFoundError, version
    for pkg in ("gevent", "greenlet", "pyramid", "waitress", "kombu", "urllib3", "celery", "dramatiq", "huey", "rq",
                "redis"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(), "versions": versions}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1])
    parser.add_argument("--quick", action="store_true", help="small N, one run, no peers unless --peers (for CI)")
    parser.add_argument("--only", default="", help=f"comma-separated workloads of {','.join(ALL + EXTRA)}")
    parser.add_argument("--peers", default=None, help=f"comma-separated of {','.join(PEERS)}, or 'none' "
                                                      "(default: all, none with --quick)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an [app:main] setting of the greenjobs servers measured, e.g. greenjobs.hub.guard=false"
                             " (repeatable)")
    parser.add_argument("--json", default="", help="write results to this file")
    parser.add_argument("--broker", choices=("embedded", "rabbitmq", "both"), default="both",
                        help="greenjobs' cpu workloads (W2, W4 cpu) on the embedded broker, RabbitMQ, or both")
    parser.add_argument("--store", choices=("sqlite", "postgres", "both"), default="sqlite",
                        help="greenjobs' ledger for W1, W3, W4: SQLite, PostgreSQL on 127.0.0.1:5432, or both")
    parser.add_argument("--server", choices=("gevent", "waitress"), default="gevent",
                        help="greenjobs' [server:main] runner: ours (gevent.pywsgi) or waitress under the same patching")
    args = parser.parse_args(argv)
    chosen = [w for w in (args.only.split(",") if args.only else ALL) if w]
    unknown = [w for w in chosen if w not in ALL + EXTRA]
    if unknown:
        parser.error(f"unknown workload {', '.join(unknown)}; known: {', '.join(ALL + EXTRA)}")
    if args.peers is None:
        names = [] if args.quick else list(PEERS)
    else:
        names = [n for n in args.peers.split(",") if n and n != "none"]
    if any(n not in PEERS for n in names):
        parser.error(f"unknown peer in {args.peers!r}; known: {', '.join(PEERS)}")
    sizes = QUICK if args.quick else FULL
    run = Run(1 if args.quick else args.runs, sizes)
    started = time.time()
    iterations = 0
    if {"W2", "W5"} & set(chosen):
        iterations = floors.measure("calibrate", 0)["iterations"]
        print(f"  cpu.pbkdf2 calibrated to {iterations} iterations (~50 ms)", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="gjbench-") as tmp:
        slow, url = None, ""
        if "W1b" in chosen:
            port = free_port()
            slow, url = wl.start_module("bench.slow_server", port, port=port), f"http://127.0.0.1:{port}/"
        try:
            limits(run, chosen, sizes, iterations, url)
            try:
                greenjobs(run, chosen, sizes, iterations, url, Path(tmp), args)
                if "W7" in chosen:
                    cluster(run, sizes, Path(tmp), args)
            finally:
                drop_postgres_databases(Path(tmp))
            peers(run, chosen, names, iterations, url, Path(tmp), args)
        finally:
            if slow is not None:
                slow.terminate()
                slow.wait(10)
    order = {w: i for i, w in enumerate(ALL + EXTRA + ("*",))}
    systems = {s: i for i, s in enumerate(("limit", "ceiling", "greenjobs", *PEERS))}
    rows = sorted(report.finish(run.rows), key=lambda r: (order[r["workload"]], systems.get(r["system"], 9)))
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
            "machine": machine(), "runs": run.runs, "pbkdf2_iterations": iterations,
            "seconds": round(time.time() - started, 1)}
    print(report.table(rows))
    if args.json:
        report.write_json(args.json, meta, rows)
    return 1 if any(r["error"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

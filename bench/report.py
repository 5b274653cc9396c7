"""One table and one JSON document from every system's measurements.

``python -m bench.report FILE.json`` prints a saved run as Markdown (machine, command, table), the
shape bench/RESULTS.md keeps.

A measurement row: workload, metric, system, config, unit, values (one per run), n, note, error.
The report adds the median, min and max, the ratio to the ideal (a constant, or a floor measured in
the same run), the ratio to greenjobs, and for greenjobs rows whether issue 6's target is met.
"""
from __future__ import annotations

import json
import statistics

#: (workload, metric) -> the ideal: seconds per 10,000 jobs on a pool of 1,000, or (workload, metric) of a
#: limit row measured in the same run. ``value / ideal`` is the ratio shown.
IDEALS = {
    ("W1", "wall"): 1.0,
    ("W1s", "wall"): 1.0,
    ("W1b", "wall"): ("W1b", "wall"),
    ("W2", "wall"): ("W2", "wall"),
    ("W3", "single"): ("W6", "pyramid hello"),
}
#: metrics that are a run's wall over its floor measured just before it: folded into the wall row,
#: whose ratio to the ideal is then their median (paired under the same load, not minutes apart)
PAIRED = ("vs_floor", "vs_pool")
#: ideals that only greenjobs' HTTP submit path is read against
GREENJOBS_ONLY = {("W3", "single")}

#: (workload, metric) -> (comparison, bound, on "value" or "ratio" to the ideal, wording): issue 6's targets
TARGETS = {
    ("W1", "wall"): ("<=", 1.3, "ratio", "≤ 1.3× ideal: 1.3 s"),
    ("W1", "rss_per_job"): ("<=", 16, "value", "≤ 16 KB"),
    ("W1b", "wall"): ("<=", 1.1, "ratio", "≤ 1.1× floor"),
    ("W2", "wall"): ("<=", 1.10, "ratio", "≤ 1.10× Pool"),
    ("W3", "single"): (">=", 0.70, "ratio", "≥ 70% of Pyramid hello"),
    ("W3", "batch"): (">=", 50_000, "value", "≥ 50,000/s"),
    ("W3", "drain"): (">=", 20_000, "value", "≥ 20,000/s"),
    ("W4", "echo p50"): ("<=", 1.0, "value", "≤ 1.0 ms"),
    ("W4", "echo p99"): ("<=", 3.0, "value", "≤ 3 ms"),
    ("W4", "echo 1rt p50"): ("<=", 1.0, "value", "≤ 1.0 ms"),
    ("W4", "echo 1rt p99"): ("<=", 3.0, "value", "≤ 3 ms"),
    ("W4", "cpu p50"): ("<=", 3.0, "value", "≤ 3 ms (RabbitMQ)"),
    ("W4", "cpu 1rt p50"): ("<=", 3.0, "value", "≤ 3 ms (RabbitMQ)"),
    ("W5", "health p99"): ("<=", 25.0, "value", "≤ 25 ms"),
}

LIMIT_SYSTEMS = ("limit", "ceiling")


def row(workload, metric, system, config, unit, values, n, note="", error=None) -> dict:
    return {"workload": workload, "metric": metric, "system": system, "config": config, "unit": unit,
            "values": list(values), "n": n, "note": note, "error": " ".join(error.split()) if error else None}


def finish(rows: list[dict]) -> list[dict]:
    """Add median, min, max, ratio_ideal, ratio_greenjobs and target to every row; fold paired ratios."""
    walls = {(r["workload"], r["system"], r["config"]): r for r in rows if r["metric"] == "wall"}
    for r in rows:
        if r["metric"] in PAIRED and (r["workload"], r["system"], r["config"]) in walls:
            walls[(r["workload"], r["system"], r["config"])]["paired"] = r["values"]
    rows[:] = [r for r in rows if r["metric"] not in PAIRED]
    for r in rows:
        vals = [v for v in r["values"] if isinstance(v, (int, float))]
        r["median"] = statistics.median(vals) if vals else None
        r["min"], r["max"] = (min(vals), max(vals)) if vals else (None, None)
    by_key = {}
    for r in rows:
        by_key.setdefault((r["workload"], r["metric"], r["system"]), r)
    for r in rows:
        key = (r["workload"], r["metric"])
        ideal = IDEALS.get(key) if r["system"] == "greenjobs" or key not in GREENJOBS_ONLY else None
        if isinstance(ideal, (int, float)):
            ideal = ideal * max(r["n"], 1000) / 10_000        # one 0.1 s wave per 1,000 jobs
        elif ideal is not None:
            ref = next((by_key.get((*ideal, s)) for s in LIMIT_SYSTEMS if (*ideal, s) in by_key), None)
            ideal = ref["median"] if ref and ref is not r else None
        r["ideal"] = ideal
        r["ratio_ideal"] = r["median"] / ideal if ideal and r["median"] is not None else None
        if r.get("paired"):
            r["ratio_ideal"] = statistics.median(r["paired"])
        gj = by_key.get((*key, "greenjobs"))
        r["ratio_greenjobs"] = (r["median"] / gj["median"] if gj and gj["median"] and r["median"] is not None
                                and r["system"] not in LIMIT_SYSTEMS else None)
        r["target"] = None
        if r["system"] == "greenjobs" and key in TARGETS and r["median"] is not None:
            op, bound, on, words = TARGETS[key]
            got = r["ratio_ideal"] if on == "ratio" else r["median"]
            if got is not None:
                met = got <= bound if op == "<=" else got >= bound
                r["target"] = f"{'met' if met else 'SHORT'} ({words})"
    return rows


def _num(v, unit) -> str:
    if v is None:
        return ""
    if unit == "jobs/s" or unit == "req/s" or abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"


def table(rows: list[dict]) -> str:
    """A Markdown table: one line per (workload, metric, system)."""
    head = ["workload", "metric", "system", "configuration", "median", "min–max", "unit", "÷ ideal",
            "÷ greenjobs", "target / note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r["error"]:
            cells = [r["workload"], r["metric"], r["system"], r["config"], "", "", "", "", "", f"error: {r['error']}"]
        else:
            span = f"{_num(r['min'], r['unit'])}–{_num(r['max'], r['unit'])}" if len(r["values"]) > 1 else ""
            notes = "; ".join(filter(None, [r.get("target"), r["note"]]))
            cells = [r["workload"], r["metric"], r["system"], r["config"], _num(r["median"], r["unit"]), span,
                     r["unit"], f"{r['ratio_ideal']:.2f}" if r.get("ratio_ideal") is not None else "",
                     f"{r['ratio_greenjobs']:.2f}" if r.get("ratio_greenjobs") is not None else "", notes]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def write_json(path: str, meta: dict, rows: list[dict]) -> None:
    with open(path, "w") as fh:
        json.dump({**meta, "rows": rows}, fh, indent=1)


def markdown(doc: dict) -> str:
    """A saved run (``--json``) as the header and table bench/RESULTS.md shows."""
    m = doc["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    return "\n".join([
        f"- date: {doc['date']} ({doc['seconds']:.0f} s)",
        f"- machine: {m['nproc']} CPUs, {m['cpu']}; Python {m['python']}",
        f"- versions: {versions}",
        f"- command: `{doc['command']}` ({doc['runs']} runs; cpu.pbkdf2 at {doc['pbkdf2_iterations']} iterations)",
        "", table(doc["rows"])])


if __name__ == "__main__":
    import sys
    with open(sys.argv[1]) as fh:
        print(markdown(json.load(fh)))

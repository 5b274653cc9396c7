"""Workflows: chain, group and chord (Celery's canvas), made into jobs and the edges between them at submission.

Every step is a job from the start, so every id is known at once and a workflow can be read, waited for
and cancelled like a batch (its id is the batch id of its jobs).  The first steps are queued; every other
step waits, ``scheduled`` with no time and a count of the dependencies it still waits for, and holds its
input as an expression over the results of those dependencies.  The transaction that moves a dependency
to its end moves its dependents too (``greenjobs.pool.store.workflows``): released once the count reaches
zero, with the input evaluated; cancelled (``upstream_failed``) if it failed or was cancelled.  Only that
one fenced move counts, so a redelivered, retried or adopted job can never count twice, and nothing polls.

An expression is ``{"job": id}`` (that job's result) or ``{"list": [expression, ...]}`` (a group's results,
in order).  A chain step receives its previous step's result as its first positional argument unless it
says ``"immutable": true`` (Celery's ``.si()``); a chord's body receives the list of its header's results.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from greenjobs.pool.errors import HandlerNotFound, InvalidWorkflow
from greenjobs.pool.job import FAILED, SCHEDULED, SUCCEEDED, TERMINAL, Job, new_id
from greenjobs.pool.spec import FIELDS as JOB_FIELDS, parse_spec

KINDS = ("chain", "group", "chord")
#: The error of a step that can no longer run because one it depends on failed or was cancelled.
UPSTREAM_FAILED = {"kind": "upstream_failed", "message": "a step this one depends on failed or was cancelled",
                   "traceback": None}

#: The JSON Schema of POST /workflows (a step is a job spec, plus "immutable", or a nested workflow).
STEP = {"type": "object", "description": "a job spec (as POST /jobs takes, plus \"immutable\": true to not receive "
                                         "the previous result) or a nested workflow"}
SCHEMA = {
    "type": "object", "additionalProperties": False, "minProperties": 1, "maxProperties": 1,
    "description": "one of chain, group, chord",
    "properties": {
        "chain": {"type": "array", "minItems": 1, "items": STEP},
        "group": {"type": "array", "minItems": 1, "items": STEP},
        "chord": {"type": "object", "required": ["header", "body"], "additionalProperties": False,
                  "properties": {"header": {"type": "array", "minItems": 1, "items": STEP}, "body": STEP}},
    },
}


@dataclass
class Plan:
    """A parsed workflow: its jobs in the order it lists them, the edges, and what its result is."""

    id: str
    kind: str
    jobs: list[Job] = field(default_factory=list)
    edges: list[tuple[str, str]] = field(default_factory=list)      # (dependency, dependent)
    result: dict | None = None                                      # the expression of the workflow's result

    def shape(self) -> dict:
        """What the workflows table keeps: the kind and the result's expression."""
        return {"kind": self.kind, "result": self.result}


def parse_workflow(data: Any, registry, settings, max_jobs: int) -> Plan:
    """Validate a POST /workflows body and make its jobs; InvalidWorkflow names the field that is wrong."""
    if not isinstance(data, dict) or len(data) != 1 or next(iter(data)) not in KINDS:
        raise InvalidWorkflow("body", "must be a JSON object with one of chain, group or chord, e.g. "
                                      '{"chain": [{"handler": "a"}, {"handler": "b"}]}')
    kind = next(iter(data))
    plan = Plan(id=new_id(), kind=kind)
    plan.result = _step(plan, data, "", None, registry, settings, max_jobs)
    return plan


def _step(plan: Plan, step: Any, where: str, incoming: dict | None, registry, settings, max_jobs: int) -> dict:
    """Add ``step`` (fed ``incoming``, an expression or None) to ``plan``; returns the expression of its result."""
    if isinstance(step, dict) and len(step) == 1 and next(iter(step)) in KINDS:
        kind, body = next(iter(step.items()))
        at = f"{where}{kind}"
        if kind == "chord":
            if not isinstance(body, dict) or set(body) != {"header", "body"}:
                raise InvalidWorkflow(at, 'must be {"header": [step, ...], "body": step}')
            header = _steps(body["header"], f"{at}.header")
            results = [_step(plan, s, f"{at}.header[{i}].", incoming, registry, settings, max_jobs)
                       for i, s in enumerate(header)]
            return _step(plan, body["body"], f"{at}.body.", {"list": results}, registry, settings, max_jobs)
        steps = _steps(body, at)
        if kind == "group":
            return {"list": [_step(plan, s, f"{at}[{i}].", incoming, registry, settings, max_jobs)
                             for i, s in enumerate(steps)]}
        out = incoming
        for i, s in enumerate(steps):
            out = _step(plan, s, f"{at}[{i}].", out, registry, settings, max_jobs)
        return out
    if len(plan.jobs) >= max_jobs:
        raise InvalidWorkflow(where.rstrip(".") or "body", f"a workflow holds at most {max_jobs} jobs "
                                                          "(greenjobs.api.max_batch)")
    job, receives = _job(step, where, incoming is not None, registry, settings)
    if incoming is not None:
        needs = sorted(jobs_in(incoming))
        job.state, job.run_at, job.deps_left = SCHEDULED, None, len(needs)
        job.step_input = incoming if receives else None
        plan.edges.extend((dependency, job.id) for dependency in needs)
    job.batch_id = job.workflow_id = plan.id
    plan.jobs.append(job)
    return {"job": job.id}


def _steps(value: Any, at: str) -> list:
    if not isinstance(value, list) or not value:
        raise InvalidWorkflow(at, "must be a non-empty JSON array of steps (job specs or workflows)")
    return value


def _job(data: Any, where: str, fed: bool, registry, settings) -> tuple[Job, bool]:
    """One step's job, and whether it receives its input; a step that does is checked against its handler
    with that argument first."""
    if not isinstance(data, dict):
        raise InvalidWorkflow(where.rstrip(".") or "body", "must be a job spec (with a 'handler') or one of "
                                                           "chain, group, chord")
    data = dict(data)
    immutable = data.pop("immutable", False)
    if not isinstance(immutable, bool):
        raise InvalidWorkflow(f"{where}immutable", "must be true or false")
    if "unique_key" in data:
        raise InvalidWorkflow(f"{where}unique_key", "a workflow's step cannot be unique (it is part of one whole); "
                                                    "drop unique_key")
    for timing in ("delay", "run_at"):
        if timing in data:
            raise InvalidWorkflow(f"{where}{timing}", "a workflow's steps start when their turn comes; "
                                                      "delay the whole workflow instead")
    receives = fed and not immutable
    if receives:                        # the handler gets the previous result first: check it fits
        args = data.get("args", [])
        data["args"] = [None, *args] if isinstance(args, list) else args
    unknown = sorted(set(data) - set(JOB_FIELDS))
    if unknown:
        raise InvalidWorkflow(f"{where}{unknown[0]}", f"unknown field; a step takes the fields of a job "
                                                      f"({', '.join(JOB_FIELDS)}) and immutable")
    try:
        job = parse_spec(data, registry, settings, where)
    except HandlerNotFound as exc:      # which step: the field names it
        raise InvalidWorkflow(f"{where}handler", str(exc)) from None
    if receives:
        job.args = job.args[1:]
    return job, receives


def jobs_in(expression: dict) -> set[str]:
    """The job ids an expression reads the results of."""
    if "job" in expression:
        return {expression["job"]}
    found: set[str] = set()
    for item in expression["list"]:
        found |= jobs_in(item)
    return found


def evaluate(expression: dict, results: dict[str, Any]) -> Any:
    """The value of an expression given the results of its jobs."""
    if "job" in expression:
        return results[expression["job"]]
    return [evaluate(item, results) for item in expression["list"]]


def describe(workflow_id: str, shape: dict, jobs: list[Job]) -> dict:
    """A workflow as GET /workflows/{id} shows it: its state (running until every step ended; then succeeded,
    failed if any step failed, else cancelled), its result once succeeded, and its steps in order."""
    states = [j.state for j in jobs]
    if not all(s in TERMINAL for s in states):
        state = "running"
    elif all(s == SUCCEEDED for s in states):
        state = SUCCEEDED
    elif FAILED in states:
        state = FAILED
    else:
        state = "cancelled"
    result = evaluate(shape["result"], {j.id: j.result for j in jobs}) if state == SUCCEEDED else None
    return {"id": workflow_id, "kind": shape["kind"], "state": state, "result": result,
            "counts": {s: states.count(s) for s in sorted(set(states))},
            "jobs": [{"id": j.id, "handler": j.handler, "state": j.state, "waiting_for": j.deps_left or None,
                      "error": j.error} for j in jobs]}

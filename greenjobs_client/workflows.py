"""Celery's canvas for greenjobs: ``chain``, ``group``, ``chord`` and step signatures, run with ``client.run``.

A workflow is plain JSON (what ``POST /workflows`` takes), so these builders only shape dicts::

    from greenjobs_client.workflows import chain, chord, group, s, si
    flow = chain(s("fetch", url), s("parse"), group(s("store"), s("index")))   # parse(fetch_result), ...
    client.run(chord([s("square", n) for n in range(10)], s("total"))).result(timeout=60)

``s("name", *args, **kwargs)`` is Celery's ``name.s(*args, **kwargs)``: a chain step receives the previous
step's result first; ``si(...)`` (Celery's ``.si()``) receives nothing.  A step may also be any job spec
(``greenjobs_client.job_spec(...)``, for priority, timeout and retries) or a nested workflow.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping


def s(handler: str, /, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """A step: ``handler(previous_result, *args, **kwargs)`` in a chain (Celery's ``.s()``)."""
    step: dict[str, Any] = {"handler": handler}
    if args:
        step["args"] = list(args)
    if kwargs:
        step["kwargs"] = dict(kwargs)
    return step


def si(handler: str, /, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """An immutable step: ``handler(*args, **kwargs)``, whatever came before (Celery's ``.si()``)."""
    return {**s(handler, *args, **kwargs), "immutable": True}


def chain(*steps: Mapping[str, Any]) -> dict[str, Any]:
    """Steps one after another, each given the previous one's result; its result is the last step's."""
    return {"chain": _steps(steps, "chain")}


def group(*steps: Mapping[str, Any]) -> dict[str, Any]:
    """Steps side by side; its result is the list of theirs, in order."""
    return {"group": _steps(steps, "group")}


def chord(header: Iterable[Mapping[str, Any]], body: Mapping[str, Any]) -> dict[str, Any]:
    """The ``header`` steps side by side, then ``body`` given the list of their results (Celery's
    ``chord(header)(body)``)."""
    return {"chord": {"header": _steps(tuple(header), "chord header"), "body": dict(body)}}


def _steps(steps: tuple, what: str) -> list[dict[str, Any]]:
    if not steps:
        raise ValueError(f"a {what} needs at least one step")
    for step in steps:
        if not isinstance(step, Mapping):
            raise TypeError(f"a {what}'s steps are s(...), si(...), job_spec(...) or workflows, not {step!r}")
    return [dict(step) for step in steps]

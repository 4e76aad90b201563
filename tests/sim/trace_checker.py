"""An independent checker of Chrome trace-event files (written apart from sgxsim.sim.trace).

Rules (issue 11): per track a B/E stack (and X slices that nest); b/e pairs matched by cat, id
and name with the b before the e; every async child inside its parent's interval.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

_EPS = 1e-6


def check_trace(data: bytes | str | Mapping[str, Any]) -> list[str]:
    """Problems found in a trace (empty when it is well nested)."""
    doc: Any = json.loads(data) if isinstance(data, bytes | str) else data
    events: Sequence[Mapping[str, Any]] = doc["traceEvents"] if isinstance(doc, Mapping) else doc
    problems: list[str] = []
    stacks: dict[tuple[Any, Any], list[Mapping[str, Any]]] = {}
    slices: dict[tuple[Any, Any], list[tuple[float, float, str]]] = {}
    open_async: dict[tuple[Any, Any, Any], list[Mapping[str, Any]]] = {}
    intervals: dict[Any, list[tuple[float, float, str]]] = {}
    order: dict[Any, list[tuple[str, str]]] = {}
    for i, ev in enumerate(events):
        ph = ev.get("ph")
        track = (ev.get("pid"), ev.get("tid"))
        if ph == "B":
            stacks.setdefault(track, []).append(ev)
        elif ph == "E":
            st = stacks.get(track)
            if not st:
                problems.append(f"event {i}: E without an open B on track {track}")
            else:
                b = st.pop()
                if ev["ts"] + _EPS < b["ts"]:
                    problems.append(f"event {i}: E before its B on track {track}")
        elif ph == "X":
            slices.setdefault(track, []).append(
                (float(ev["ts"]), float(ev["ts"]) + float(ev["dur"]), ev["name"])
            )
        elif ph == "b":
            key = (ev.get("cat"), ev.get("id"), ev.get("name"))
            open_async.setdefault(key, []).append(ev)
            order.setdefault(ev.get("id"), []).append(("b", ev["name"]))
        elif ph == "e":
            key = (ev.get("cat"), ev.get("id"), ev.get("name"))
            pending = open_async.get(key)
            if not pending:
                problems.append(f"event {i}: e {key} without an earlier b")
                continue
            b = pending.pop()
            if ev["ts"] + _EPS < b["ts"]:
                problems.append(f"event {i}: e {key} at {ev['ts']} before its b at {b['ts']}")
            intervals.setdefault(ev.get("id"), []).append((float(b["ts"]), float(ev["ts"]), ev["name"]))
            order.setdefault(ev.get("id"), []).append(("e", ev["name"]))
    for track, st in stacks.items():
        if st:
            problems.append(f"track {track}: {len(st)} B without E")
    for key, pending in open_async.items():
        if pending:
            problems.append(f"async {key}: {len(pending)} b without e")
    for track, evs in slices.items():
        problems += _nesting(evs, f"track {track}")
    for ident, seq in order.items():
        stack: list[str] = []
        for kind, name in seq:
            if kind == "b":
                stack.append(name)
            elif not stack or stack[-1] != name:
                problems.append(f"async id {ident}: e {name!r} closes {stack[-1:] or 'nothing'} (not nested)")
                break
            else:
                stack.pop()
    for ident, evs in intervals.items():
        problems += _nesting(evs, f"async id {ident}")
    return problems


def _nesting(evs: list[tuple[float, float, str]], where: str) -> list[str]:
    out: list[str] = []
    stack: list[tuple[float, float, str]] = []
    for start, end, name in sorted(evs, key=lambda e: (e[0], -(e[1] - e[0]))):
        while stack and stack[-1][1] <= start + _EPS:
            stack.pop()
        if stack and end > stack[-1][1] + _EPS:
            out.append(f"{where}: {name!r} [{start}, {end}] overlaps {stack[-1][2]!r} without nesting")
            continue
        stack.append((start, end, name))
    return out

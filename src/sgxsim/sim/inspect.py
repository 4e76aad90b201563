"""Machine state at a chosen simulated time: EPC sections, EPCM entries, SECS and TCS contents.

:func:`inspect_machine` runs a scenario up to ``at_ns`` (scenario time) with a
:class:`~sgxsim.sim.runner.Runner` and reads the simulated silicon the way OpenSGX's gdb helpers
show an enclave: the EPC sections with their use, the EPCM entries (filtered by enclave, state or
page), each enclave's SECS (the architectural fields of the page and the processor's hidden
state: EID, MRENCLAVE, MRSIGNER, ISV fields, child count) and its TCS pages (OSSA, NSSA, CSSA,
OENTRY, FS/GS bases). :func:`inspect_schema` is the JSON Schema of the result.

Models: Intel SDM Vol. 3D §34.5 (EPCM fields), §34.7 (SECS), §34.8 (TCS); OpenSGX's
``gdb`` enclave-inspection helpers (what they print, not how).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from sgxsim.errors import InvalidArgument
from sgxsim.hw.arch import PageType, Secs, Tcs
from sgxsim.sim.runner import Runner
from sgxsim.sim.scenario import Scenario

__all__ = ["EPCM_STATES", "inspect_machine", "inspect_runner", "inspect_schema"]

#: ``--state`` filters: an EPCM flag, ``free`` (not valid), or a page type.
EPCM_STATES = (
    "valid",
    "free",
    "pending",
    "blocked",
    "modified",
    "pr",
    "secs",
    "tcs",
    "reg",
    "va",
    "trim",
)
_PT_STATES: Mapping[str, PageType] = MappingProxyType(
    {
        "secs": PageType.PT_SECS,
        "tcs": PageType.PT_TCS,
        "reg": PageType.PT_REG,
        "va": PageType.PT_VA,
        "trim": PageType.PT_TRIM,
    }
)


def _pt_name(pt: int) -> str:
    try:
        return PageType(pt).name
    except ValueError:
        return f"PT_{pt}"


def inspect_machine(
    scenario: Scenario,
    at_ns: int,
    *,
    seed: int | None = None,
    policy: str | None = None,
    enclave: str | None = None,
    state: str | None = None,
    page: int | None = None,
    limit: int = 64,
) -> dict[str, Any]:
    """Run ``scenario`` to scenario time ``at_ns`` and describe the machine (see the module docstring)."""
    if isinstance(at_ns, bool) or not isinstance(at_ns, int) or at_ns < 0:
        raise InvalidArgument(f"at_ns must be an int >= 0, got {at_ns!r}")
    runner = Runner(scenario, seed=seed, policy=policy)
    runner.run(until_ns=at_ns)
    return inspect_runner(runner, enclave=enclave, state=state, page=page, limit=limit)


def _resolve_enclave(runner: Runner, enclave: str) -> int:
    """A kernel enclave id from an id or a workload instance name."""
    k = runner.kernel
    if enclave.isdigit() and int(enclave) in k.enclaves:
        return int(enclave)
    for inst in runner.instances:
        if inst.name == enclave and inst.encl_id >= 0:
            return inst.encl_id
    known = sorted({str(i) for i in k.enclaves} | {i.name for i in runner.instances if i.encl_id >= 0})
    raise InvalidArgument(f"no enclave {enclave!r} at this time (known: {', '.join(known) or 'none'})")


def inspect_runner(
    runner: Runner,
    *,
    enclave: str | None = None,
    state: str | None = None,
    page: int | None = None,
    limit: int = 64,
) -> dict[str, Any]:
    """Describe the machine of a runner that has run (filters as :func:`inspect_machine`)."""
    if state is not None and state not in EPCM_STATES:
        raise InvalidArgument(f"state must be one of {', '.join(EPCM_STATES)}; got {state!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InvalidArgument(f"limit must be an int >= 0, got {limit!r}")
    m = runner.machine
    k = runner.kernel
    epcm = m.epc.epcm
    names = {inst.encl_id: inst.name for inst in runner.instances if inst.encl_id >= 0}
    names.update(_platform_enclaves(runner))
    sections = []
    for s in m.epc.sections:
        sl = slice(s.first_page, s.first_page + s.npages)
        sections.append(
            {
                "index": s.index,
                "base": s.base,
                "size": s.size,
                "node": s.node,
                "pages": s.npages,
                "valid": int(np.count_nonzero(epcm.valid[sl])),
            }
        )
    mask = np.ones(m.epc.npages, dtype=np.bool_)
    secs_of: dict[int, int] = {}
    for eid, encl in k.enclaves.items():
        if encl.secs_epc >= 0:
            secs_of[eid] = encl.secs_epc
    if enclave is not None:
        eid = _resolve_enclave(runner, enclave)
        secs = secs_of.get(eid, -1)
        mask &= epcm.valid & ((epcm.secs == secs) | (np.arange(m.epc.npages) == secs))
    if state is not None:
        if state == "free":
            mask &= ~epcm.valid
        elif state in _PT_STATES:
            mask &= epcm.valid & (epcm.pt == int(_PT_STATES[state]))
        else:
            mask &= getattr(epcm, state)
    if page is not None:
        if isinstance(page, bool) or not isinstance(page, int) or not 0 <= page < m.epc.npages:
            raise InvalidArgument(f"page must be an EPC page index in 0..{m.epc.npages - 1}, got {page!r}")
        single = np.zeros(m.epc.npages, dtype=np.bool_)
        single[page] = True
        mask &= single
    idx = np.flatnonzero(mask)
    entries = []
    owner_of_secs = {v: kid for kid, v in secs_of.items()}
    for i in idx[:limit].tolist():
        e = epcm.entry(i)
        secs_idx = int(e["secs"])
        owner = owner_of_secs.get(i if e["pt"] == PageType.PT_SECS else secs_idx)
        entries.append(
            {
                "page": i,
                "phys": m.epc.phys_of(i),
                "valid": e["valid"],
                "type": _pt_name(int(e["pt"])) if e["valid"] else None,
                "rwx": ("r" if e["r"] else "-") + ("w" if e["w"] else "-") + ("x" if e["x"] else "-"),
                "pending": e["pending"],
                "modified": e["modified"],
                "blocked": e["blocked"],
                "pr": e["pr"],
                "secs_page": secs_idx if e["valid"] and e["pt"] != PageType.PT_SECS else None,
                "linaddr": int(e["linaddr"]) if e["valid"] else None,
                "enclave": owner,
                "workload": names.get(owner) if owner is not None else None,
            }
        )
    enclaves = []
    wanted = None if enclave is None else _resolve_enclave(runner, enclave)
    for eid in sorted(secs_of):
        if wanted is not None and eid != wanted:
            continue
        enclaves.append(_describe_enclave(runner, eid, secs_of[eid], names.get(eid), limit))
    cpusvn = m.cr_cpusvn
    return {
        "format": "sgxsim-inspect/1",
        "scenario": runner.scenario.name,
        "seed": runner.seed,
        "policy": runner.policy,
        "at_ns": runner.clock.now_ns(),
        "machine_time_ns": runner.clock.now_ns(),
        "cpusvn": None if cpusvn is None else cpusvn.hex(),
        "epc_sections": sections,
        "epcm": {"matched": len(idx), "shown": len(entries), "entries": entries},
        "enclaves": enclaves,
    }


def _describe_enclave(
    runner: Runner, eid: int, secs_idx: int, name: str | None, limit: int
) -> dict[str, Any]:
    m = runner.machine
    epcm = m.epc.epcm
    raw = m.epc.read(secs_idx)
    secs = Secs.unpack(raw)
    hidden = m.epc.secs_state.get(secs_idx)
    children = np.flatnonzero(epcm.valid & (epcm.secs == secs_idx))
    tcs_pages = [int(i) for i in children.tolist() if int(epcm.pt[i]) == PageType.PT_TCS]
    tcs_list = []
    for i in tcs_pages[:limit]:
        t = Tcs.unpack(m.epc.read(i))
        tcs_list.append(
            {
                "page": i,
                "linaddr": int(epcm.linaddr[i]),
                "ossa": t.ossa,
                "cssa": t.cssa,
                "nssa": t.nssa,
                "oentry": t.oentry,
                "ofsbase": t.ofsbase,
                "ogsbase": t.ogsbase,
                "fslimit": t.fslimit,
                "gslimit": t.gslimit,
            }
        )
    secs_d: dict[str, Any] = {
        "page": secs_idx,
        "base": secs.base,
        "size": secs.size,
        "ssa_frame_size": secs.ssa_frame_size,
        "miscselect": secs.miscselect,
        "attributes": secs.attributes,
        "xfrm": secs.xfrm,
    }
    if hidden is not None:
        secs_d.update(
            {
                "eid": hidden.eid,
                "initialized": hidden.initialized,
                "mrenclave": hidden.mrenclave.hex(),
                "mrsigner": hidden.mrsigner.hex(),
                "isv_prod_id": hidden.isv_prod_id,
                "isv_svn": hidden.isv_svn,
                "child_count": hidden.child_count,
                "base": hidden.base,
                "size": hidden.size,
                "attributes": hidden.attributes,
                "xfrm": hidden.xfrm,
                "ssa_frame_size": hidden.ssa_frame_size,
            }
        )
    return {
        "id": eid,
        "workload": name,
        "epc_pages": len(children) + 1,
        "secs": secs_d,
        "tcs": tcs_list,
    }


def _platform_enclaves(runner: Runner) -> dict[int, str]:
    """Kernel enclave ids of the platform's quoting enclaves (aesmd's PCE and QE)."""
    out: dict[int, str] = {}
    for label, attr in (("aesmd PCE", "_pce"), ("aesmd QE", "_qe")):
        handle = getattr(runner.platform, attr, None)
        if handle is None or not handle.alive:
            continue
        encl = handle.encl
        out[int(encl.proc.file(encl.fd).private_data.id)] = label
    return out


def inspect_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of :func:`inspect_machine`'s result."""
    nat = {"type": "integer", "minimum": 0}
    opt_nat = {"type": ["integer", "null"], "minimum": 0}
    opt_str = {"type": ["string", "null"]}
    entry = {
        "type": "object",
        "additionalProperties": False,
        "required": [
            "page",
            "phys",
            "valid",
            "type",
            "rwx",
            "pending",
            "modified",
            "blocked",
            "pr",
            "secs_page",
            "linaddr",
            "enclave",
            "workload",
        ],
        "properties": {
            "page": nat,
            "phys": nat,
            "valid": {"type": "boolean"},
            "type": opt_str,
            "rwx": {"type": "string", "pattern": "^[r-][w-][x-]$"},
            "pending": {"type": "boolean"},
            "modified": {"type": "boolean"},
            "blocked": {"type": "boolean"},
            "pr": {"type": "boolean"},
            "secs_page": opt_nat,
            "linaddr": opt_nat,
            "enclave": opt_nat,
            "workload": opt_str,
        },
    }
    section = {
        "type": "object",
        "additionalProperties": False,
        "required": ["index", "base", "size", "node", "pages", "valid"],
        "properties": {k: nat for k in ("index", "base", "size", "node", "pages", "valid")},
    }
    tcs = {
        "type": "object",
        "required": ["page", "linaddr", "ossa", "cssa", "nssa", "oentry"],
        "properties": {k: nat for k in ("page", "linaddr", "ossa", "cssa", "nssa", "oentry")},
    }
    enclave = {
        "type": "object",
        "additionalProperties": False,
        "required": ["id", "workload", "epc_pages", "secs", "tcs"],
        "properties": {
            "id": nat,
            "workload": opt_str,
            "epc_pages": nat,
            "secs": {"type": "object", "required": ["page", "base", "size"]},
            "tcs": {"type": "array", "items": tcs},
        },
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "sgxsim inspect",
        "type": "object",
        "additionalProperties": False,
        "required": [
            "format",
            "scenario",
            "seed",
            "policy",
            "at_ns",
            "machine_time_ns",
            "cpusvn",
            "epc_sections",
            "epcm",
            "enclaves",
        ],
        "properties": {
            "format": {"const": "sgxsim-inspect/1"},
            "scenario": {"type": "string"},
            "seed": nat,
            "policy": {"type": "string"},
            "at_ns": nat,
            "machine_time_ns": nat,
            "cpusvn": {"type": ["string", "null"], "pattern": "^[0-9a-f]{32}$"},
            "epc_sections": {"type": "array", "items": section},
            "epcm": {
                "type": "object",
                "additionalProperties": False,
                "required": ["matched", "shown", "entries"],
                "properties": {"matched": nat, "shown": nat, "entries": {"type": "array", "items": entry}},
            },
            "enclaves": {"type": "array", "items": enclave},
        },
    }

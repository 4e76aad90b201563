"""``sgxsim validate SCENARIO.toml`` (and ``sgxsim run --dry-run``): check a scenario, run nothing.

Prints the resolved plan: the machine, the EPC budget against what the workloads and VMs ask
for, and every start and event in time order with the file line that sets it. Exit codes: 0 the
scenario is valid; 2 it is not (one line: ``FILE:LINE: key.path: what is wrong``).

Imports only the scenario parser (no numpy, matplotlib or kernel model), so it is cheap enough
for the bad-input property test to run thousands of times.
"""

from __future__ import annotations

import json
from typing import Any

import click

from sgxsim.sim.scenario import Scenario, WorkloadSpec
from sgxsim.sim.toml_reader import format_ns_short

__all__ = ["plan", "print_plan", "validate"]

_PAGE = 4096


def _pages(nbytes: int) -> int:
    return -(-nbytes // _PAGE)


def _workload_pages(w: WorkloadSpec) -> int:
    """EPC pages one instance asks for at its peak: image, heap, growth, the SECS and one TCS per thread.

    A lower bound: the loader's layout (guard pages, SSA frames) adds a few pages per thread.
    """
    return _pages(w.image_size) + _pages(w.heap) + _pages(w.sgx2_growth) + 1 + w.threads


def _size(n: int) -> str:
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            value = n / (1 << shift)
            return f"{value:.4g} {unit}"
    return f"{n} B"


def plan(sc: Scenario, policy: str | None = None) -> dict[str, Any]:
    """The resolved plan of scenario ``sc`` as plain data (what ``validate --json`` prints)."""
    m = sc.machine
    epc_bytes = sum(s.size for s in m.epc_sections)
    workloads: list[dict[str, Any]] = [
        {
            "name": w.name,
            "where": w.where,
            "count": w.count,
            "pages_each": _workload_pages(w),
            "pages": _workload_pages(w) * w.count,
            "start_ns": w.start,
            "lifetime_ns": w.lifetime,
            "attest_every_ns": w.attest_every,
        }
        for w in sc.workloads
    ]
    vms: list[dict[str, Any]] = [
        {"name": v.name, "where": v.where, "pages": _pages(v.epc), "start_ns": v.start} for v in sc.vms
    ]
    asked = sum(int(w["pages"]) for w in workloads) + sum(int(v["pages"]) for v in vms)
    epc_pages = epc_bytes // _PAGE
    timeline: list[dict[str, Any]] = []
    for w in sc.workloads:
        timeline.append({"at_ns": w.start, "what": f"start workload {w.name} (x{w.count})", "where": w.where})
    for v in sc.vms:
        timeline.append({"at_ns": v.start, "what": f"start VM {v.name}", "where": v.where})
    for e in sc.events:
        detail = e.kind
        if e.patch is not None:
            detail += f" patch={e.patch}"
        if e.new_late_microcode_svn is not None:
            detail += f" new_late_microcode_svn={e.new_late_microcode_svn}"
        if e.count is not None:
            detail += f" count={e.count}"
        timeline.append({"at_ns": e.at, "what": detail, "where": e.where})
    timeline.sort(key=lambda x: int(x["at_ns"]))
    notes: list[str] = []
    if asked > epc_pages:
        notes.append(
            f"the workloads and VMs ask for {asked} EPC pages but the machine has {epc_pages}: "
            "enclaves will be paged out (EWB), and events may run later than written "
            "(the run reports each delay as a warning)"
        )
    return {
        "scenario": sc.name,
        "source": sc.source,
        "seed": sc.seed,
        "duration_ns": sc.duration,
        "machine": {
            "sockets": m.sockets,
            "cpus_per_socket": m.cpus_per_socket,
            "logical_cpus": m.sockets * m.cpus_per_socket,
            "epc_sections": [{"size": s.size, "node": s.node} for s in m.epc_sections],
            "epc_bytes": epc_bytes,
            "sgx2": m.sgx2,
            "eupdatesvn": m.eupdatesvn,
            "svn_update_policy": str(policy or m.svn_update_policy),
            "patches": [p.name for p in m.patches],
        },
        "epc_budget": {"epc_pages": epc_pages, "asked_pages": asked, "workloads": workloads, "vms": vms},
        "timeline": timeline,
        "notes": notes,
    }


def print_plan(sc: Scenario, *, as_json: bool = False, policy: str | None = None) -> None:
    """Print :func:`plan` as JSON or as text."""
    p = plan(sc, policy)
    if as_json:
        click.echo(json.dumps(p, indent=2))
        return
    m = p["machine"]
    b = p["epc_budget"]
    out = [
        f"{p['source'] or p['scenario']}: valid. Scenario {p['scenario']!r}, seed {p['seed']}, "
        f"lasts {format_ns_short(p['duration_ns'])} (times count from power-on).",
        f"Machine: {m['sockets']} socket(s) x {m['cpus_per_socket']} CPUs, "
        f"EPC {_size(m['epc_bytes'])} in {len(m['epc_sections'])} section(s), "
        f"SGX2 {'yes' if m['sgx2'] else 'no'}, EUPDATESVN {'yes' if m['eupdatesvn'] else 'no'}, "
        f"policy {m['svn_update_policy']}.",
        f"EPC budget: {b['asked_pages']} of {b['epc_pages']} pages asked for "
        f"({100 * b['asked_pages'] / max(b['epc_pages'], 1):.1f} %):",
    ]
    for w in b["workloads"]:
        out.append(f"  workload {w['name']}: {w['count']} x {w['pages_each']} pages  [{w['where']}]")
    for v in b["vms"]:
        out.append(f"  VM {v['name']}: {v['pages']} pages of vEPC  [{v['where']}]")
    out.append("Plan, in time order:")
    for t in p["timeline"]:
        out.append(f"  {format_ns_short(t['at_ns']):>10}  {t['what']}  [{t['where']}]")
    out.append(f"  {format_ns_short(p['duration_ns']):>10}  end")
    for n in p["notes"]:
        out.append(f"Note: {n}")
    click.echo("\n".join(out))


@click.command("validate")
@click.argument("scenario", metavar="SCENARIO.toml")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def validate(scenario: str, as_json: bool) -> None:
    """Check SCENARIO.toml without running it and print the resolved plan.

    Exit 0 when valid; 2 with FILE:LINE, the key path and what is wrong otherwise.
    """
    from sgxsim.sim.scenario import load_scenario

    if scenario == "demo":
        from sgxsim.sim.demo import demo_scenario

        print_plan(demo_scenario(), as_json=as_json)
        return
    print_plan(load_scenario(scenario), as_json=as_json)

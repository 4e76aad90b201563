"""A fleet run's outputs: fleet.json, fleet.md, status and downtime plots, the host scenario files.

:func:`write_fleet` writes everything into a temporary folder next to ``out_dir`` and moves it
into place only when complete, so an interrupted run leaves no half-written outputs. fleet.json
is a pure function of the fleet file, the seed, ``--sample`` and ``--policy`` (never of the
engine, the worker count or the time), written with sorted keys.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sgxsim.sim.fleet.model import BUCKETS
from sgxsim.sim.fleet.run import FleetResult, why_not_reached

__all__ = ["FLEET_FILES", "fleet_dict", "fleet_markdown", "write_fleet"]

#: Files one fleet run writes (plus ``scenarios/``).
FLEET_FILES = ("fleet.json", "fleet.md", "fleet-status.png", "fleet-downtime.png")
HOST_SEED_RULE = (
    'seed of host i = first 8 bytes (big-endian) of SHA-256("sgxsim-fleet/<fleet seed>/<i>"), top bit cleared'
)
_BUCKET_COLORS = {
    "UpToDate": "#2ca02c",
    "SWHardeningNeeded": "#9acd32",
    "OutOfDate": "#ff7f0e",
    "refused": "#d62728",
}


def _fmt_ms(ns: int | None) -> str:
    """A duration for fleet.md: seconds from 1 s, milliseconds below."""
    if ns is None:
        return "n/a"
    return f"{ns / 1e9:.3f} s" if ns >= 1_000_000_000 else f"{ns / 1e6:.3f} ms"


def fleet_dict(res: FleetResult) -> dict[str, Any]:
    """The content of fleet.json."""
    f = res.fleet
    classes = {c.name: c for c in f.classes}
    hosts = []
    for i in sorted(res.outcomes):
        o = res.outcomes[i]
        cls, wave = res.host_class[i], res.host_wave[i]
        scen = f"scenarios/{cls}-wave{wave}.toml"
        hosts.append(
            {
                "index": i,
                "class": cls,
                "wave": wave,
                "seed": o.seed,
                "weight": round(res.weights[i], 6),
                "scenario": scen,
                "report_sha256": o.report_sha256,
                "reached_new_cpusvn": o.reached_new_svn,
                "final_cpusvn": o.final_cpusvn,
                "time_to_new_cpusvn_ns": o.time_to_new_cpusvn_ns,
                "unavailable_ns": o.unavailable_ns,
                "enclave_unavailable_ns": list(o.enclave_unavailable_ns),
                "enclave_downtime_ns": o.downtime_ns,
                "enclaves_destroyed": o.enclaves_destroyed,
                "window": dict(o.window),
                "ecall_p99_ns": dict(o.ecall_p99_ns),
                "events": dict(o.events),
                "kernel_warns": o.warnings,
                "verdicts_refused": o.verdicts_refused,
                "why_not": None if o.reached_new_svn else why_not_reached(classes[cls], o),
                "replay": f"sgxsim run {scen} --seed {o.seed}",
            }
        )
    simulated = len(res.outcomes)
    represented = round(sum(res.weights.values()))
    halted = res.halted
    last_day = f.days - 1
    overall = res.daily()
    return {
        "fleet": f.name,
        "description": f.description,
        "seed": f.seed,
        "hosts_total": f.hosts,
        "days": f.days,
        "policy": res.policy,
        "host_seed_rule": HOST_SEED_RULE,
        "sampling": {
            "sample_per_class_wave": res.sample,
            "host_runs_simulated": simulated,
            "hosts_represented": represented,
            "note": (
                "every patched host was simulated"
                if res.sample is None
                else f"{simulated} host runs stand for {represented} patched hosts "
                f"(up to {res.sample} per class and wave, each weighted by its group's size); "
                "fractions carry 95 % Wilson intervals per group, summed over groups"
            ),
        },
        "classes": [
            {
                "name": c.name,
                "count": c.count,
                "policy": c.policy.value,
                "procedure": c.procedure,
                "start_microcode": {
                    "revision": c.early_patch.revision,
                    "late_microcode_svn": c.early_patch.late_microcode_svn,
                },
            }
            for c in f.classes
        ],
        "intel": dict(vars(f.intel)),
        "relying_party": dict(vars(f.relying_party)),
        "rollout": {
            "patch": dict(vars(f.rollout.patch)),
            "verdict": "halted" if halted is not None else "completed",
            "halted": None
            if halted is None
            else {"wave": halted.wave, "day": halted.gate_day, "gates": list(halted.breached)},
            "waves": [w.to_dict() for w in res.waves],
            "gates": dict(vars(f.rollout.gates)),
        },
        "status": {
            "buckets": list(BUCKETS),
            "overall": overall,
            "per_class": {c.name: res.daily(c.name) for c in f.classes},
            "final_day": {b: overall["fraction"][b][last_day] for b in BUCKETS},
        },
        "unavailability": {
            "overall": res.unavailability(),
            "per_wave": [{"wave": w.wave, **res.unavailability(w.wave)} for w in res.waves],
        },
        "update_window": {
            "overall": res.update_window(),
            "per_wave": [{"wave": w.wave, **res.update_window(w.wave)} for w in res.waves],
        },
        "events": {
            "overall": res.events(),
            "per_wave": [{"wave": w.wave, **res.events(w.wave)} for w in res.waves],
        },
        "never_reached_new_cpusvn": res.never_reached(),
        "scenario_files": sorted(f"scenarios/{c}-wave{w}.toml" for c, w in res.scenario_files),
        "hosts": hosts,
    }


def comparison_row(data: dict[str, Any]) -> dict[str, Any]:
    """One --compare-policies row from a fleet.json dict."""
    final = data["status"]["final_day"]
    un = data["unavailability"]["overall"]
    return {
        "policy": data["policy"],
        "verdict": data["rollout"]["verdict"],
        **{f"final_{b}": final[b] for b in BUCKETS},
        "never_reached_hosts": sum(r["hosts"] for r in data["never_reached_new_cpusvn"]),
        "unavailability_p99_ns": un["p99_ns"],
        "unavailability_sum_ns": un["sum_ns"],
        "locked_window_p99_ns": data["update_window"]["overall"]["locked_window_ns"]["p99"],
        "ioctls_refused_in_window": data["update_window"]["overall"]["ioctls_refused_in_window"]["sum"],
        "enclaves_lost": data["events"]["overall"]["enclave_lost"],
        "host_runs": data["sampling"]["host_runs_simulated"],
    }


def fleet_markdown(data: dict[str, Any]) -> str:
    """fleet.md: the verdict, the status at key days, waves, unavailability, hosts left behind."""
    s = data["sampling"]
    out = [
        f"# Fleet {data['fleet']}: {data['rollout']['verdict']}",
        "",
        data["description"],
        "",
        f"{data['hosts_total']} hosts in {len(data['classes'])} classes over {data['days']} days, "
        f"seed {data['seed']}" + (f", every class on {data['policy']}" if data["policy"] else "") + ".",
        f"Simulation: {s['note']}.",
        "",
        "## Classes",
        "",
        "| class | hosts | kernel design | procedure |",
        "|---|---|---|---|",
        *(f"| {c['name']} | {c['count']} | {c['policy']} | {c['procedure']} |" for c in data["classes"]),
        "",
        "## Waves and health gates",
        "",
        "| wave | day | gate day | hosts | simulated | failed updates % | WARNs | unavailability p99 "
        "| refused % | locked window p99 | enclaves lost | gates |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for w in data["rollout"]["waves"]:
        out.append(
            f"| {w['wave']} | {w['day']} | {w['gate_day']} | {w['hosts']} | {w['simulated']} | "
            f"{w['failed_updates_percent']:g} | {w['kernel_warns']} | "
            f"{_fmt_ms(w['unavailability_p99_ns'])} | {w['refused_percent']:g} | "
            f"{_fmt_ms(w['locked_window_p99_ns'])} | {w['enclaves_lost']} | "
            f"{'; '.join(w['breached']) or 'ok'} |"
        )
    h = data["rollout"]["halted"]
    out += [
        "",
        f"**Halted** after wave {h['wave']} on day {h['day']}: {'; '.join(h['gates'])}."
        if h
        else "The rollout completed: no gate halted it.",
        "",
        "## Attestation status of the fleet",
        "",
    ]
    st = data["status"]["overall"]
    intel = data["intel"]
    marks = sorted(
        {0, intel["published_day"], intel["early_update_day"], intel["standard_update_day"], data["days"] - 1}
        | {w["gate_day"] for w in data["rollout"]["waves"] if w["gate_day"] < data["days"]}
    )
    head = "| day | " + " | ".join(BUCKETS) + " |"
    out += [head, "|---|" + "---|" * len(BUCKETS)]
    for d in marks:
        cells = []
        for b in BUCKETS:
            cell = f"{100 * st['fraction'][b][d]:.1f} %"
            if "wilson95_low" in st:
                cell += f" [{100 * st['wilson95_low'][b][d]:.1f}, {100 * st['wilson95_high'][b][d]:.1f}]"
            cells.append(cell)
        out.append(f"| {d} | " + " | ".join(cells) + " |")
    out += _unavailability_md(data)
    out += _window_md(data)
    out += [
        "",
        "## Hosts that never reached the new CPUSVN",
        "",
    ]
    rows = data["never_reached_new_cpusvn"]
    if rows:
        out += ["| class | hosts | simulated | why |", "|---|---|---|---|"]
        out += [f"| {r['class']} | {r['hosts']} | {r['simulated']} | {r['reason']} |" for r in rows]
    else:
        out.append("None.")
    out += ["", f"Replay any host alone: `sgxsim run <scenario> --seed <seed>` ({data['host_seed_rule']})."]
    return "\n".join(out) + "\n"


def _ns(d: dict[str, Any], key: str) -> str:
    return _fmt_ms(d[key])


def _wave_rows(section: dict[str, Any]) -> list[dict[str, Any]]:
    """A fleet.json ``{"per_wave": [...], "overall": {...}}`` section as table rows labelled by wave."""
    waves = [{"label": str(w["wave"]), **w} for w in section["per_wave"]]
    return [*waves, {"label": "all", **section["overall"]}]


def _unavailability_md(data: dict[str, Any]) -> list[str]:
    """Per wave and overall: each patched host's enclave unavailability (its enclaves' report.json
    ``unavailable_ns``, summed) and each enclave's."""
    rows = _wave_rows(data["unavailability"])
    out = [
        "",
        "## Enclave unavailability",
        "",
        "From each host's report.json: an enclave is unavailable from its last successful ECALL "
        "before a loss to the first after (`enclaves[].unavailable_ns`); a host's figure sums its "
        "enclaves. Sums are extrapolated to the hosts the simulated ones stand for.",
        "",
        "| wave | hosts (simulated) | sum | host p50 | host p99 | host max | enclaves | enclave p50 "
        "| enclave p99 | enclave max |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['label']} | {r['hosts']} ({r['simulated']}) | {_ns(r, 'sum_ns')} | {_ns(r, 'p50_ns')} | "
            f"{_ns(r, 'p99_ns')} | {_ns(r, 'max_ns')} | {r['enclaves']} | {_ns(r, 'enclave_p50_ns')} | "
            f"{_ns(r, 'enclave_p99_ns')} | {_ns(r, 'enclave_max_ns')} |"
        )
    return out


def _window_md(data: dict[str, Any]) -> list[str]:
    """Per wave and overall: the EPC-locked window, what it refused and interrupted, ECALL latency,
    time to the new CPUSVN (report.json ``metrics``, ``enclaves``, ``events`` of each host)."""
    rows = _wave_rows(data["update_window"])
    evrows = _wave_rows(data["events"])
    out = [
        "",
        "## The update window on the patched hosts",
        "",
        "Per host (p50 / p99 / max over hosts) from report.json `metrics`: the EPC-locked window, "
        "ioctls refused and SIGBUS faults in it, AEXs by IPI; the worst ECALL p99 of a host's "
        "enclaves during the update; the time from the SVN-raising load to the new CPUSVN (hosts "
        "that reached it). Totals are extrapolated.",
        "",
        "| wave | locked window p50 / p99 / max | ioctls refused (total, host p99) | SIGBUS (total) "
        "| AEX by IPI (total) | ECALL p99 during (host p99) | load to new CPUSVN p50 / p99 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lw, io = r["locked_window_ns"], r["ioctls_refused_in_window"]
        tt = r["time_to_new_cpusvn_ns"]
        out.append(
            f"| {r['label']} | {_fmt_ms(lw['p50'])} / {_fmt_ms(lw['p99'])} / {_fmt_ms(lw['max'])} | "
            f"{io['sum']}, {io['p99']} | {r['faults_sigbus_in_window']['sum']} | "
            f"{r['aex_by_ipi']['sum']} | {_fmt_ms(r['ecall_p99_during_ns']['p99'])} | "
            f"{_fmt_ms(tt['p50'])} / {_fmt_ms(tt['p99'])} |"
        )
    kinds = [k for k in data["events"]["overall"] if any(e[k] for e in evrows)]
    out += [
        "",
        "Events in the host runs (report.json `events`, extrapolated):",
        "",
        "| wave | " + " | ".join(k.replace("_", " ") for k in kinds) + " |",
        "|---|" + "---|" * len(kinds),
    ]
    out += [f"| {e['label']} | " + " | ".join(str(e[k]) for k in kinds) + " |" for e in evrows]
    return out


def _plot(data: dict[str, Any], status_png: Path, downtime_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    st = data["status"]["overall"]
    days = st["day"]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.stackplot(
        days,
        *(st["fraction"][b] for b in BUCKETS),
        labels=list(BUCKETS),
        colors=[_BUCKET_COLORS[b] for b in BUCKETS],
        alpha=0.85,
    )
    intel = data["intel"]
    for day, label in (
        (intel["published_day"], "TCB recovery published"),
        (intel["early_update_day"], "early TCB Info"),
        (intel["standard_update_day"], "standard TCB Info"),
    ):
        ax.axvline(day, color="black", ls=":", lw=1)
        ax.annotate(label, (day, 1.0), rotation=90, va="top", ha="right", fontsize=7)
    for w in data["rollout"]["waves"]:
        ax.axvline(w["day"], color="#1f77b4", ls="--", lw=0.8)
        ax.annotate(f"wave {w['wave']}", (w["day"], 0.02), rotation=90, fontsize=7, color="#1f77b4")
    ax.set_xlim(0, max(days[-1], 1))
    ax.set_ylim(0, 1)
    ax.set_xlabel("fleet day")
    ax.set_ylabel("fraction of hosts")
    ax.set_title(f"{data['fleet']}: attestation status ({data['rollout']['verdict']})")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(status_png, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    per_wave: dict[int, list[float]] = {}
    for host in data["hosts"]:
        per_wave.setdefault(host["wave"], []).extend(v / 1e9 for v in host["enclave_unavailable_ns"])
    waves = sorted(per_wave)
    if waves:
        ax.boxplot(
            [per_wave[w] or [0.0] for w in waves], tick_labels=[f"wave {w}" for w in waves], whis=(1, 99)
        )
    ax.set_ylabel("unavailable time per enclave (s)")
    ax.set_title(f"{data['fleet']}: enclave unavailability per wave (simulated hosts)")
    fig.tight_layout()
    fig.savefig(downtime_png, dpi=110)
    plt.close(fig)


def _write_one(root: Path, res: FleetResult) -> dict[str, Any]:
    data = fleet_dict(res)
    (root / "scenarios").mkdir(parents=True, exist_ok=True)
    for (cls, wave), text in sorted(res.scenario_files.items()):
        (root / "scenarios" / f"{cls}-wave{wave}.toml").write_text(text, encoding="utf-8")
    (root / "fleet.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    (root / "fleet.md").write_text(fleet_markdown(data), encoding="utf-8")
    _plot(data, root / "fleet-status.png", root / "fleet-downtime.png")
    return data


def write_fleet(out_dir: str | Path, results: Sequence[FleetResult]) -> dict[str, Any]:
    """Write one fleet run (or, for several policies, a comparison with one subfolder each).

    The folder appears complete or not at all: everything is written to a temporary sibling
    first, which then replaces ``out_dir``. Returns the top-level fleet.json content.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if len(results) == 1:
            top = _write_one(tmp, results[0])
        else:
            runs = {}
            for res in results:
                assert res.policy is not None
                runs[res.policy] = _write_one(tmp / res.policy, res)
            top = {
                "fleet": results[0].fleet.name,
                "comparison": [comparison_row(d) for d in runs.values()],
                "runs": {p: f"{p}/fleet.json" for p in runs},
            }
            (tmp / "fleet.json").write_text(
                json.dumps(top, indent=1, sort_keys=True) + "\n", encoding="utf-8"
            )
            (tmp / "fleet.md").write_text(_comparison_markdown(top), encoding="utf-8")
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            out.rename(old / "x")
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return top


def _comparison_markdown(top: dict[str, Any]) -> str:
    out = [
        f"# Fleet {top['fleet']}: kernel designs compared",
        "",
        "| policy | verdict | " + " | ".join(f"final {b}" for b in BUCKETS) + " | never reached | "
        "unavailability p99 | locked window p99 | ioctls refused | enclaves lost | host runs |",
        "|---|---|" + "---|" * len(BUCKETS) + "---|---|---|---|---|---|",
    ]
    for r in top["comparison"]:
        out.append(
            f"| {r['policy']} | {r['verdict']} | "
            + " | ".join(f"{100 * r[f'final_{b}']:.1f} %" for b in BUCKETS)
            + f" | {r['never_reached_hosts']} | {_fmt_ms(r['unavailability_p99_ns'])} | "
            f"{_fmt_ms(r['locked_window_p99_ns'])} | {r['ioctls_refused_in_window']} | "
            f"{r['enclaves_lost']} | {r['host_runs']} |"
        )
    out += ["", "Each policy's full results: `<policy>/fleet.md`."]
    return "\n".join(out) + "\n"

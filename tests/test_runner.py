"""The scenario runner: workloads, events, policies, metrics, determinism, and inspect."""

from __future__ import annotations

import dataclasses
import itertools
import re
import types
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.sim.trace_checker import check_trace
from tests.tracing import untraced

from sgxsim.errors import InvalidArgument, ScenarioError
from sgxsim.hw.arch import PAGE_SIZE, PageType, cpusvn_le, secinfo_flags
from sgxsim.hw.crypto import Measurement
from sgxsim.kernel import main as kernel_main
from sgxsim.kernel import printk, uapi
from sgxsim.kernel.process import Process
from sgxsim.sdk import loader
from sgxsim.sdk.image import EnclaveImage, Segment
from sgxsim.sdk.sign import sign_enclave
from sgxsim.sim import runner as runner_mod
from sgxsim.sim.inspect import inspect_runner, inspect_schema
from sgxsim.sim.report import report_schema, write_outputs
from sgxsim.sim.runner import WHAT_IF_LABEL, WHAT_IF_POLICY, Runner, RunProgress
from sgxsim.sim.runner import results as results_mod
from sgxsim.sim.scenario import EpcSectionSpec, load_scenario, parse_scenario
from sgxsim.sim.timeline import COMPARISON_METRICS, format_ns

BASE = """\
[scenario]
name = "t"
seed = 11
duration = "{duration}"

[machine]
sockets = 1
cpus_per_socket = 2
svn_update_policy = "{policy}"
vepc = "{vepc}"

[[machine.epc_sections]]
size = "32MiB"

[[machine.microcode.patches]]
name = "up"
revision = 0xd0003d1
late_microcode_svn = 3

[[machine.microcode.patches]]
name = "same"
revision = 0xd0003c0
late_microcode_svn = 2
"""

APP = """
[[workload]]
name = "{name}"
heap = "256KiB"
attest_every = "{every}"
on_epc_loss = "{loss}"
{extra}
"""


def scenario(
    events: str = "",
    *,
    policy: str = "rfc-v2-teardown",
    duration: str = "3s",
    vepc: str = "skip",
    workloads: str | None = None,
) -> str:
    w = (
        workloads
        if workloads is not None
        else APP.format(name="app", every="500ms", loss="restart", extra="")
    )
    return BASE.format(duration=duration, policy=policy, vepc=vepc) + w + events


RECOVER_AND_LOAD = """
[[event]]
at = "800ms"
kind = "tcb_recovery"
new_late_microcode_svn = 3

[[event]]
at = "1s"
kind = "microcode_load"
patch = "up"
"""


def run(text: str, **kw: object):  # type: ignore[no-untyped-def]
    r = Runner(parse_scenario(text), **kw)  # type: ignore[arg-type]
    return r, r.run()


@pytest.fixture(scope="module")
def rfc_run():  # type: ignore[no-untyped-def]
    return run(scenario(RECOVER_AND_LOAD))


def test_rfc_v2_late_load_updates_cpusvn_and_restarts(rfc_run) -> None:  # type: ignore[no-untyped-def]
    r, res = rfc_run
    m = res.metrics
    assert r.machine.cr_cpusvn is not None and r.machine.cr_cpusvn[1] == 3
    assert [s.new[2:4] for s in res.timeline.cpusvn_steps] == ["03"]
    assert m["faults"] == 1 and m["restarts"] == 1
    assert m["epc_pages_zapped"] > 0 and m["enclaves_destroyed"] >= 1
    assert isinstance(m["time_to_attested_ns"], int) and 0 < m["time_to_attested_ns"] < 2_000_000_000
    statuses = [v.status for v in res.timeline.verdicts]
    # Boot level is SWHardeningNeeded, OutOfDate after the recovery, UpToDate after the update.
    assert statuses[0] == "SWHardeningNeeded" and "OutOfDate" in statuses and statuses[-1] == "UpToDate"
    assert all(v.accepted == (v.status != "OutOfDate") for v in res.timeline.verdicts)
    assert {k for k, _, _ in COMPARISON_METRICS} <= set(m)
    assert any(w.outcome == "updated" for w in res.timeline.update_windows)


def test_tcb_recovery_event_carries_its_impact(rfc_run) -> None:  # type: ignore[no-untyped-def]
    """The recovery's event says what tcb-impact predicts (the one platform demoted from
    SWHardeningNeeded to OutOfDate, refused from the publication on with no grace period, UpToDate
    again at late-microcode SVN 3), the relying party then behaves so, and report.md shows it."""
    _, res = rfc_run
    (ev,) = [e for e in res.report.events if e["kind"] == "tcb_recovery"]
    x = ev["extra"]
    assert (x["platforms"], x["platforms_demoted"], x["demoted_status"]) == (1, 1, "OutOfDate")
    assert x["grace_period_ns"] == 0 and x["refused_from_ns"] == ev["t_start_ns"]
    assert x["required_late_microcode_svn"] == 3
    assert "demotes 1 of 1 platform(s)" in ev["detail"] and "SWHardeningNeeded -> OutOfDate" in ev["detail"]
    refused = [v for v in res.report.verdicts if not v.accepted]
    assert refused and all(v.t_ns >= x["refused_from_ns"] for v in refused)
    assert all(v.status == "OutOfDate" for v in refused)
    md = res.report.to_markdown()
    section = md.split("## TCB recoveries", 1)[1].split("\n## ", 1)[0]
    row = next(line for line in section.splitlines() if line.startswith("| 800"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells == ["800.000 ms", "1 of 1", "OutOfDate", "800.000 ms", "0 ns", "3"]


def test_report_validates_and_is_deterministic(rfc_run) -> None:  # type: ignore[no-untyped-def]
    _, res = rfc_run
    jsonschema.validate(res.report.to_dict(), report_schema())
    _, again = run(scenario(RECOVER_AND_LOAD))
    assert again.report.to_json() == res.report.to_json()
    assert again.trace.to_bytes() == res.trace.to_bytes()
    assert check_trace(res.trace.to_bytes()) == []


def test_other_seed_changes_timing_only(rfc_run) -> None:  # type: ignore[no-untyped-def]
    _, res = rfc_run
    _, other = run(scenario(RECOVER_AND_LOAD), seed=99)
    assert other.report.seed == 99
    assert [v.t_ns for v in other.timeline.verdicts] != [v.t_ns for v in res.timeline.verdicts]
    assert other.metrics["faults"] == res.metrics["faults"]


def test_linux_619_never_updates_while_enclaves_run() -> None:
    _, res = run(scenario(RECOVER_AND_LOAD, policy="linux-6.19-on-open"))
    assert res.metrics["time_to_attested_ns"] is None
    assert res.metrics["faults"] == 0 and res.metrics["epc_pages_zapped"] == 0
    assert not res.timeline.cpusvn_steps
    assert res.timeline.verdicts[-1].status == "OutOfDate" and not res.timeline.verdicts[-1].accepted


def test_linux_619_operator_flow_updates_on_open() -> None:
    flow = (
        RECOVER_AND_LOAD
        + """
[[event]]
at = "900ms"
kind = "drain"

[[event]]
at = "1100ms"
kind = "restart"
"""
    )
    _, res = run(scenario(flow, policy="linux-6.19-on-open"))
    assert [u["trigger"] for u in res.updates if u["result"] == "SUCCESS"] == ["open"]
    assert res.metrics["enclaves_stopped_by_operator"] == 1 and res.metrics["faults"] == 0
    assert res.metrics["time_to_attested_ns"] is not None


def test_explicit_trigger_and_entropy_retries() -> None:
    ev = (
        RECOVER_AND_LOAD
        + """
[[event]]
at = "1500ms"
kind = "entropy_starve"
count = 2

[[event]]
at = "2s"
kind = "svn_update_trigger"
"""
    )
    _, res = run(scenario(ev, policy="explicit-trigger"))
    trig = [u for u in res.updates if u["trigger"] == "trigger"]
    assert len(trig) == 1 and trig[0]["result"] == "SUCCESS" and trig[0]["tries"] == 3
    assert res.timeline.cpusvn_steps and res.timeline.cpusvn_steps[0].t_ns > 2_000_000_000


def test_what_if_skips_teardown_for_patch_that_does_not_raise_svn() -> None:
    ev = """
[[event]]
at = "1s"
kind = "microcode_load"
patch = "same"
"""
    _, rfc = run(scenario(ev))
    _r, what = run(scenario(ev), policy=WHAT_IF_POLICY)
    assert rfc.metrics["faults"] == 1 and rfc.metrics["epc_pages_zapped"] > 0
    assert what.metrics["faults"] == 0 and what.metrics["epc_pages_zapped"] == 0
    assert what.report.policy == WHAT_IF_LABEL and "impossible in Linux" in WHAT_IF_LABEL


def test_on_epc_loss_exit_swap_out_growth_and_vm() -> None:
    workloads = (
        APP.format(name="quitter", every="400ms", loss="exit", extra="")
        + APP.format(name="cold", every="never", loss="restart", extra="swap_out = true")
        + APP.format(name="grower", every="never", loss="restart", extra='sgx2_growth = "256KiB"')
        + '\n[[vm]]\nname = "g"\nepc = "1MiB"\n'
    )
    ev = '\n[[event]]\nat = "1s"\nkind = "microcode_load"\npatch = "up"\n'
    r, res = run(scenario(ev, workloads=workloads, vepc="skip"))
    rows = {e.name: e for e in res.report.enclaves}
    assert rows["quitter"].state == "exited" and rows["quitter"].downtime_ns > 1_900_000_000
    # Swapped out when built, and again when it was rebuilt after the update.
    assert r.kernel.stats.get("pages_reclaimed", 0) >= 2 * 64
    assert "\n".join(res.report.narrative).count("swaps cold out") == 2
    assert rows["grower"].epc_pages_peak >= 64 + 70
    assert rows["cold"].epc_pages_peak < rows["grower"].epc_pages_peak
    assert rows["VM g (vEPC)"].epc_pages_peak == 256 and rows["VM g (vEPC)"].state == "running"
    assert r.machine.stats["EAUG"] == 2 * 64  # grown once, and again after the restart


def test_kexec_keeps_cpusvn_and_restarts_services() -> None:
    ev = RECOVER_AND_LOAD + '\n[[event]]\nat = "2s"\nkind = "kexec"\n'
    r, res = run(scenario(ev))
    assert r.generation == 1
    assert r.machine.cr_cpusvn is not None and r.machine.cr_cpusvn[1] == 3
    assert [u["trigger"] for u in res.updates].count("init") == 2
    assert res.report.enclaves[0].state == "running"
    assert res.timeline.verdicts[-1].status == "UpToDate"


def test_bad_arguments() -> None:
    s = parse_scenario(scenario())
    with pytest.raises(InvalidArgument, match="policy"):
        Runner(s, policy="yolo")
    with pytest.raises(InvalidArgument, match="seed"):
        Runner(s, seed=-1)
    text = scenario(workloads=APP.format(name="g", every="never", loss="exit", extra='sgx2_growth = "8KiB"'))
    with pytest.raises(ScenarioError, match=r"workload\[0\]\.sgx2_growth"):
        Runner(parse_scenario(text.replace("cpus_per_socket = 2", "cpus_per_socket = 2\nsgx2 = false")))


def test_progress_counts_work_and_is_complete_only_at_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake progress sink sees the boot's EPC pages sanitized (slice by slice), then simulated
    time up to the end, then the late load that runs past the end (the run's last event, at
    its end), each phase monotonic and never complete before the last call; watching changes
    nothing in the run."""
    monkeypatch.setattr(kernel_main, "SANITIZE_SLICE_PAGES", 1000)
    text = scenario(RECOVER_AND_LOAD, duration="1s")
    seen: list[RunProgress] = []
    r = Runner(parse_scenario(text), progress=seen.append)
    res = r.run()
    npages = (32 << 20) // PAGE_SIZE
    phases = [p.phase for p in seen]
    order = ["boot", "run", "overrun"]
    assert phases[:-1] == sorted(phases[:-1], key=order.index) and phases[-1] == "run"
    boot = [p for p in seen if p.phase == "boot"]
    assert [p.done for p in boot] == [0, *range(1000, npages, 1000), npages - 1]
    assert all(p.total == npages and p.unit == "pages" for p in boot)
    run = [p for p in seen[:-1] if p.phase == "run"]
    assert len(run) >= 3 and all(p.total == 1_000_000_000 - r.t0_ns and p.unit == "ns" for p in run)
    assert all(a.done < b.done and a.now_ns < b.now_ns for a, b in itertools.pairwise(run))
    assert all(p.done == p.now_ns - r.t0_ns for p in run)
    over = [p for p in seen if p.phase == "overrun"]
    assert over and all((p.done, p.total) == (1, 2) and p.now_ns >= 1_000_000_000 for p in over)
    assert "1 of 2 events" in over[0].describe()
    assert all(p.fraction < 1 and not p.finished for p in seen[:-1])
    last = seen[-1]
    assert last.finished and last.fraction == 1.0 and last.now_ns > 1_000_000_000
    assert res.report.warnings  # the overrun is reported
    plain = Runner(parse_scenario(text)).run()
    assert plain.report.to_json() == res.report.to_json()
    assert plain.trace.to_bytes() == res.trace.to_bytes()


def test_inspect_filters_and_schema() -> None:
    r = Runner(parse_scenario(scenario(RECOVER_AND_LOAD)))
    r.run(until_ns=500_000_000)
    data = inspect_runner(r, enclave="app", limit=1000)
    jsonschema.validate(data, inspect_schema())
    assert data["at_ns"] == 500_000_000
    (encl,) = data["enclaves"]
    assert encl["workload"] == "app" and len(encl["tcs"]) == 1 and encl["secs"]["initialized"]
    assert data["epcm"]["matched"] == encl["epc_pages"] == data["epcm"]["shown"]
    assert {e["type"] for e in data["epcm"]["entries"]} >= {"PT_SECS", "PT_TCS", "PT_REG"}
    tcs = inspect_runner(r, state="tcs", limit=1000)
    assert tcs["epcm"]["matched"] == 1 + 2  # the app's TCS, the PCE's and the QE's
    free = inspect_runner(r, state="free", limit=3)
    assert free["epcm"]["shown"] == 3 and not any(e["valid"] for e in free["epcm"]["entries"])
    page = encl["secs"]["page"]
    one = inspect_runner(r, page=page)
    assert [e["type"] for e in one["epcm"]["entries"]] == ["PT_SECS"]
    with pytest.raises(InvalidArgument, match="no enclave"):
        inspect_runner(r, enclave="nope")
    with pytest.raises(InvalidArgument, match="state"):
        inspect_runner(r, state="weird")


# ---------------------------------------------------------------------------------------
# Large enclaves: bounded source window, measurement in runs, sliced EPC counts

LARGE_EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "large-epc-512gib.toml"


def _image(segs: list[tuple[int, bool, bool]]) -> EnclaveImage:
    """Segments back to back from (pages, measured, tcs); data on the first page of each."""
    out: list[Segment] = []
    off = 0
    for i, (n, measured, tcs) in enumerate(segs):
        flags = secinfo_flags(PageType.PT_TCS, 0) if tcs else secinfo_flags(PageType.PT_REG, 3)
        data = bytes([i + 1]) * 100 if not tcs else b""
        out.append(Segment(f"s{i}", off, n * PAGE_SIZE, flags, measured, data))
        off += n * PAGE_SIZE
    size = 1 << max(13, (off - 1).bit_length())
    return EnclaveImage(tuple(out), size)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 40), st.booleans(), st.booleans()), min_size=1, max_size=5),
    st.integers(1, 5),
)
def test_image_measurement_in_runs_equals_page_by_page(segs: list[tuple[int, bool, bool]], ssa: int) -> None:
    """MRENCLAVE with unmeasured segments hashed in runs (eadd_many) equals the EADD/EEXTEND
    sequence page by page, whatever the mix of measured, unmeasured and TCS segments."""
    image = dataclasses.replace(_image(segs), ssa_frame_size=ssa)
    want = Measurement.ecreate(ssa, image.size)
    for offset, flags, data, measured in image.pages():
        hashed = flags & ~0x7 if (flags >> 8) & 0xFF == PageType.PT_TCS else flags
        want.eadd(offset, hashed)
        if measured:
            for c in range(0, PAGE_SIZE, 256):
                want.eextend(offset + c, data[c : c + 256])
    got = image.measurement()
    assert got.update_count == want.update_count
    assert image.mrenclave() == want.finalize()


@pytest.mark.parametrize("window_pages", [1, 3, 1 << 14])
def test_loader_adds_large_segments_through_a_bounded_window(
    monkeypatch: pytest.MonkeyPatch, window_pages: int
) -> None:
    """Segments larger than the window take one ADD_PAGES per window at successive offsets, from
    sources no larger than the window; EINIT accepts the signer's MRENCLAVE (measured data pages
    and zero pages alike) and every page is in the EPC with its contents."""
    monkeypatch.setattr(loader, "ADD_PAGES_WINDOW", window_pages * PAGE_SIZE)
    r = Runner(parse_scenario(scenario(duration="1s")))
    image = _image(
        [(1, True, True), (7, True, False), (2, False, False), (9, False, False), (5, True, False)]
    )
    data = bytes(range(256)) * 64 + b"\x01" * 5000  # two pages and a bit of data in six pages
    data_seg = Segment("data", image.src_size, 6 * PAGE_SIZE, secinfo_flags(PageType.PT_REG, 3), True, data)
    image = dataclasses.replace(image, segments=(*image.segments, data_seg))
    sig = sign_enclave(image, r._isv_key)
    proc = Process(r.kernel, "loader-test", cpu=0)
    calls: list[tuple[int, int, int]] = []
    allocs: list[int] = []
    ioctl, alloc = proc.ioctl, proc.alloc

    def spy_ioctl(fd: int, request: int, arg: object = 0) -> int:
        if request == uapi.SGX_IOC_ENCLAVE_ADD_PAGES:
            assert isinstance(arg, uapi.sgx_enclave_add_pages)
            calls.append((int(arg.offset), int(arg.length), int(arg.flags)))
        return ioctl(fd, request, arg)

    def spy_alloc(data: bytes | int, prot: int = uapi.PROT_READ | uapi.PROT_WRITE) -> int:
        allocs.append(data if isinstance(data, int) else len(data))
        return alloc(data, prot)

    monkeypatch.setattr(proc, "ioctl", spy_ioctl)
    monkeypatch.setattr(proc, "alloc", spy_alloc)
    encl = loader.load_enclave(proc, image, sigstruct=sig)
    window = window_pages * PAGE_SIZE
    want = [
        (seg.offset + o, min(window, seg.size - o), uapi.SGX_PAGE_MEASURE if seg.measure else 0)
        for seg in image.segments
        for o in range(0, seg.size, min(window, seg.size))
    ]
    assert calls == want
    assert max(allocs) <= max(window, PAGE_SIZE)
    epc = r.machine.epc
    valid = np.flatnonzero(epc.epcm.valid)
    by_lin = dict(zip(epc.epcm.linaddr[valid].tolist(), valid.tolist(), strict=True))
    for offset, _flags, data, _measured in image.pages():
        assert epc.read(by_lin[encl.base + offset]) == data
    encl.close()
    proc.exit()


def test_owner_counts_do_not_depend_on_the_slice(monkeypatch: pytest.MonkeyPatch) -> None:
    """EPC use per enclave counted slice by slice equals one pass over the whole EPC."""
    text = scenario(RECOVER_AND_LOAD)
    r, res = run(text)
    whole = runner_mod._owner_counts(r.kernel)
    monkeypatch.setattr(results_mod, "_COUNT_SLICE", 1000)
    sliced = runner_mod._owner_counts(r.kernel)
    assert [a.tolist() for a in whole] == [a.tolist() for a in sliced]
    _r2, res2 = run(text)
    assert res2.timeline.epc_pages == res.timeline.epc_pages
    assert res2.report.to_json() == res.report.to_json()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 4), st.integers(0, 6), st.integers(1, 300)), min_size=1, max_size=30),
    st.integers(1, 700),
)
def test_owner_counts_match_a_per_page_histogram(runs: list[tuple[int, int, int]], slice_pages: int) -> None:
    """Counting by runs or page by page, in any slice size: the plain histogram of enclave-owned
    (ENCL_PAGE, SECS, VA_PAGE) and of vEPC pages by owner id."""
    kinds = np.repeat(np.array([k for k, _, _ in runs], dtype=np.uint8), [n for _, _, n in runs])
    ids = np.repeat(np.array([i for _, i, _ in runs], dtype=np.int32), [n for _, _, n in runs])
    fake = types.SimpleNamespace(epc_owner_kind=kinds, epc_owner_id=ids)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(results_mod, "_COUNT_SLICE", slice_pages)
        counts, vepc = runner_mod._owner_counts(fake)  # type: ignore[arg-type]
    encl = (kinds >= 1) & (kinds <= 3)
    want_c = np.bincount(ids[encl], minlength=max(len(counts), 1))
    want_v = np.bincount(ids[kinds == 4], minlength=max(len(vepc), 1))
    assert counts.tolist() == want_c.tolist() and vepc.tolist() == want_v.tolist()


def test_large_example_scaled_down_fills_swaps_and_zaps() -> None:
    """examples/large-epc-512gib.toml at 1/256 scale (2 GiB EPC, 16 enclaves, image sizes scaled
    alike): the EPC is fully in use with some pages swapped out, then the late load raises the SVN
    and the RFC v2 teardown zaps every resident page and destroys all 16 enclaves."""
    s = load_scenario(LARGE_EXAMPLE)
    machine = dataclasses.replace(s.machine, epc_sections=(EpcSectionSpec(2 << 30, 0),))
    workloads = tuple(dataclasses.replace(w, image_size=w.image_size // 256) for w in s.workloads)
    s = dataclasses.replace(s, machine=machine, workloads=workloads)
    r = Runner(s)
    res = r.run()
    npages = r.machine.epc.npages
    rows = res.report.enclaves
    assert len(rows) == 16 and all(e.state == "exited" for e in rows)
    assert sum(e.epc_pages_peak for e in rows) >= npages - 16
    assert r.kernel.stats.get("pages_reclaimed", 0) > 0
    assert "the reclaimer swapped" in "\n".join(res.report.narrative)
    zapped = res.metrics["epc_pages_zapped"]
    assert isinstance(zapped, int) and npages - 256 <= zapped <= npages  # concurrent builds: a few free
    assert res.metrics["enclaves_destroyed"] == 16 and res.metrics["svn_updates_ok"] == 1
    (step,) = res.timeline.cpusvn_steps
    assert cpusvn_le(bytes.fromhex(step.old), bytes.fromhex(step.new)) and step.old != step.new
    assert res.report.kernel_warnings == 0


BUSY_HOST = Path(__file__).resolve().parents[1] / "examples" / "busy-host.toml"


# Untraced under --cov: the skipped-decisions test's traced run covers every arc this one does
# (coverage contexts, 2026-12-07).
@pytest.mark.no_cover
def test_busy_host_shows_the_window() -> None:
    """examples/busy-host.toml under rfc-v2-teardown: the EPC-locked window refuses ioctls and
    interrupts ECALL threads with IPIs; events hold the load and the update; the trace nests.
    (Byte reproducibility: test_report_validates_and_is_deterministic.)"""
    s = load_scenario(BUSY_HOST)
    res = Runner(s).run()
    m = res.metrics
    assert isinstance(m["locked_window_ns"], int) and m["locked_window_ns"] > 0
    assert isinstance(m["ioctls_refused_in_window"], int) and m["ioctls_refused_in_window"] > 0
    assert isinstance(m["aex_by_ipi"], int) and m["aex_by_ipi"] > 0
    kinds = {e["kind"] for e in res.report.events}
    assert {"microcode_load", "svn_update", "attestation"} <= kinds
    assert all(e["t_start_ns"] <= e["t_end_ns"] for e in res.report.events)
    jsonschema.validate(res.report.to_dict(), report_schema())
    assert check_trace(res.trace.to_bytes()) == []
    assert m["svn_updates_ok"] == 1 and m["new_cpusvn_attested"] is True
    # report.md: each service's unavailable time and ECALL latency around the late load (not the
    # boot-time EUPDATESVN of sgx_init, which ran before any ECALL).
    md = res.report.to_markdown()
    latency = md.split("## ECALL latency", 1)[1].split("\n## ", 1)[0]
    services = [e for e in res.report.enclaves if e.name.startswith("service")]
    assert len(services) == 2
    for e in services:
        lat = e.ecall_latency_ns
        assert lat["before"]["n"] and lat["after"]["n"]
        row = next(x for x in latency.splitlines() if x.startswith(f"| {e.name} "))
        cells = [c.strip() for c in row[1:-1].split("|")]
        for phase, cell in zip(("before", "during", "after"), cells[1:], strict=True):
            st = lat[phase]
            want = "-"
            if st["n"]:
                want = " / ".join(format_ns(st[k]) for k in ("p50", "p99", "max"))  # type: ignore[arg-type]
                want += f" ({st['n']})"
            assert cell == want
        assert 0 < e.unavailable_ns < 800_000_000
        assert f"| {format_ns(e.downtime_ns)} | {format_ns(e.unavailable_ns)} |" in md


STAMPED = """
[[event]]
at = "300ms"
kind = "microcode_load"
patch = "same"

[[event]]
at = "600ms"
kind = "entropy_starve"
count = 2

[[event]]
at = "700ms"
kind = "microcode_load"
patch = "up"
"""


def _stamp_us(line: str) -> int:
    """The microseconds of a dmesg line's ``[%5lu.%06lu]`` stamp."""
    m = re.match(r"^\[ *(\d+)\.(\d{6})\] ", line)
    assert m is not None, line
    return int(m[1]) * 1_000_000 + int(m[2])


def test_kernel_log_stamps_are_printk_times_floored_to_microseconds(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """kernel.log: each line's stamp is its printk's simulated time (the printing task's own
    time in the run's power-on time base; before the scheduler runs, boot time) floored to
    microseconds; the microcode and EUPDATESVN lines fall inside the report's microcode_load and
    svn_update events, and each update's EUPDATESVN line is stamped at its end."""
    printed: list[tuple[int | None, int]] = []
    real = printk.KernelLog.printk

    def spy(
        self: printk.KernelLog, level: printk.LogLevel, fmt: str, *args: object, **kw: str | None
    ) -> printk.LogEntry:
        entry = real(self, level, fmt, *args, **kw)
        sched: Any = self._hooks  # the runner's scheduler
        task = sched.current
        printed.append((None if task is None else task.local_ns, entry.time_ns))
        return entry

    monkeypatch.setattr(printk.KernelLog, "printk", spy)
    r = Runner(parse_scenario(scenario(STAMPED, duration="1s")))
    res = r.run()
    write_outputs(tmp_path, res.report, res.trace, res.timeline)
    lines = (tmp_path / "kernel.log").read_text().splitlines()
    assert lines == res.kernel_log and len(lines) == len(printed) >= 5
    for line, (task_ns, entry_ns) in zip(lines, printed, strict=True):
        assert _stamp_us(line) == entry_ns // 1000
        assert entry_ns == task_ns if task_ns is not None else entry_ns <= r.t0_ns
    loads = [e for e in res.report.events if e["kind"] == "microcode_load"]
    updates = [e for e in res.report.events if e["kind"] == "svn_update"]
    assert len(loads) == 2 and len(updates) == 3  # sgx_init's, then one per load
    for line, (_, t) in zip(lines, printed, strict=True):
        if "] microcode: " in line:
            assert any(e["t_start_ns"] <= t <= e["t_end_ns"] for e in loads), line
        if "EUPDATESVN" in line:
            assert any(e["t_start_ns"] <= t <= e["t_end_ns"] for e in updates), line
    eupdatesvn = {_stamp_us(line) for line in lines if "EUPDATESVN" in line}
    assert all(u["t_end_ns"] // 1000 in eupdatesvn for u in updates)


def test_skipped_decisions_leave_the_run_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner skips a scheduling decision that can only pick the running task again
    (``_RunScheduler._keeps_running``); taking every decision instead gives the same report and
    trace, byte for byte, on the busy host (ECALL threads, builders, a VM, IPIs in the window)."""
    text = BUSY_HOST.read_text().replace('duration = "800ms"', 'duration = "450ms"')
    s = parse_scenario(text)
    fast = Runner(s).run()
    assert fast.metrics["aex_by_ipi"] and fast.metrics["ioctls_refused_in_window"]
    monkeypatch.setattr(runner_mod.core._RunScheduler, "_keeps_running", lambda self, cur: False)
    with untraced():  # the reference run repeats the traced one's code
        slow = Runner(s).run()
    assert slow.report.to_json() == fast.report.to_json()
    assert slow.trace.to_bytes() == fast.trace.to_bytes()

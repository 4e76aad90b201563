"""Chrome trace-event output: tracks, well-formed slices, determinism and the size budget."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgxsim.errors import InvalidArgument
from sgxsim.sim.trace import CATEGORIES, CPU_PID, DROP_ORDER, KERNEL_PID, TraceRecorder, Track

LIMIT = 50_000_000  # the brief's hard cap on trace.json


def _parse(data: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(data)
    assert doc["displayTimeUnit"] == "ns"
    assert isinstance(doc["traceEvents"], list)
    return doc


def _names(doc: dict[str, Any], kind: str) -> dict[tuple[int, int], str]:
    return {
        (e["pid"], e["tid"]): e["args"]["name"]
        for e in doc["traceEvents"]
        if e["ph"] == "M" and e["name"] == kind
    }


def _slices_by_track(doc: dict[str, Any]) -> dict[tuple[int, int], list[dict[str, Any]]]:
    tracks: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for e in doc["traceEvents"]:
        if e["ph"] == "X":
            tracks[(e["pid"], e["tid"])].append(e)
    return tracks


def _assert_well_formed(doc: dict[str, Any]) -> None:
    """ts ascending per track, dur >= 0, and slices on a track nest or are disjoint."""
    for track, evs in _slices_by_track(doc).items():
        ts = [e["ts"] for e in evs]
        assert ts == sorted(ts), track
        stack: list[float] = []  # end times of the enclosing slices
        for e in evs:
            assert e["dur"] >= 0
            end = e["ts"] + e["dur"]
            while stack and e["ts"] >= stack[-1]:
                stack.pop()
            if stack:
                assert end <= stack[-1] + 1e-9, (track, e)
            stack.append(end)
    names = {e["name"] for e in doc["traceEvents"] if e["ph"] == "M"}
    assert names <= {"process_name", "process_sort_index", "thread_name", "thread_sort_index"}


def _scenario_trace(rec: TraceRecorder) -> None:
    """A small run: 2 sockets x 4 CPUs, ksgxd, two enclave processes, one SVN update."""
    cpus = [rec.cpu(i) for i in range(8)]
    ksgxd = rec.ksgxd()
    app = rec.process(1201, "enclave-app")
    vm = rec.process(1300, "qemu-vm0")
    worker = rec.thread(1201, 1202, "enclave-app/worker")
    machine = rec.machine()
    # Build: one ioctl slice around a batch of EADDs (one slice, pages in args).
    rec.begin(app, "SGX_IOC_ENCLAVE_ADD_PAGES", 1_000, "ioctl", {"count": 64})
    rec.slice(cpus[1], "EADD", 1_500, 250, "encls", {"pages": 64})
    rec.end(app, 2_000)
    rec.slice(worker, "EENTER", 3_000, 500, "enclu")
    rec.slice(vm, "EPC fault", 3_100, 40, "fault", {"addr": "0x7f0000001000"})
    rec.slice(ksgxd, "sgx_reclaim_pages", 4_000, 900, "reclaim", {"pages": 16})
    rec.counter(machine, "EPC pages", 4_900, {"used": 1234})
    rec.counter(machine, "EPC pages", 9_000, {"used": 0})
    # The RFC v2 update: lock, zap (EREMOVE per page, one slice), EUPDATESVN, unlock.
    rec.async_slice("svn update", 5_000, 4_000, args={"outcome": "updated"})
    rec.async_slice("lock", 5_000, 100)
    rec.async_slice("zap", 5_100, 2_000, args={"pages": 1234})
    rec.slice(cpus[0], "EREMOVE", 5_100, 2_000, "encls", {"pages": 1234})
    rec.async_slice("eupdatesvn", 7_100, 1_500)
    rec.slice(cpus[0], "EUPDATESVN", 7_100, 1_500, "encls")
    rec.async_slice("unlock", 8_600, 400)
    rec.instant(app, "SIGBUS", 9_100, "fault", {"addr": "0x7f0000002000"})
    rec.instant(ksgxd, "WARN sgx_update_svn", 9_200, "update", scope="p")
    rec.slice(worker, "attest", 10_000, 5_000, "attest", {"status": "UpToDate"})


def test_tracks_and_metadata() -> None:
    rec = TraceRecorder(metadata={"scenario": "demo", "seed": 7})
    _scenario_trace(rec)
    doc = _parse(rec.to_bytes())
    threads = _names(doc, "thread_name")
    assert [threads[(CPU_PID, CPU_PID + 1 + i)] for i in range(8)] == [f"CPU {i}" for i in range(8)]
    assert threads[(KERNEL_PID, KERNEL_PID + 1)] == "ksgxd"
    assert threads[(1201, 1202)] == "enclave-app/worker"
    procs = {pid: name for (pid, _), name in _names(doc, "process_name").items()}
    assert procs == {CPU_PID: "machine", KERNEL_PID: "kernel", 1201: "enclave-app", 1300: "qemu-vm0"}
    assert doc["otherData"]["scenario"] == "demo"
    assert doc["otherData"]["seed"] == 7
    assert doc["otherData"]["dropped"] == 0
    _assert_well_formed(doc)


def test_slices_are_in_microseconds_with_args() -> None:
    rec = TraceRecorder()
    _scenario_trace(rec)
    doc = _parse(rec.to_bytes())
    eadd = next(e for e in doc["traceEvents"] if e.get("name") == "EADD")
    assert eadd == {
        "ph": "X",
        "cat": "encls",
        "name": "EADD",
        "pid": CPU_PID,
        "tid": CPU_PID + 2,
        "ts": 1.5,
        "dur": 0.25,
        "args": {"pages": 64},
    }
    ioctl = next(e for e in doc["traceEvents"] if e.get("name") == "SGX_IOC_ENCLAVE_ADD_PAGES")
    assert (ioctl["ts"], ioctl["dur"], ioctl["args"]) == (1.0, 1.0, {"count": 64})
    cats = {e["cat"] for e in doc["traceEvents"] if "cat" in e}
    assert cats == {"encls", "enclu", "ioctl", "fault", "update", "reclaim", "attest", "epc"}
    counters = [e for e in doc["traceEvents"] if e["ph"] == "C"]
    assert [(c["ts"], c["args"]) for c in counters] == [(4.9, {"used": 1234}), (9.0, {"used": 0})]
    sigbus = next(e for e in doc["traceEvents"] if e.get("name") == "SIGBUS")
    assert (sigbus["ph"], sigbus["s"], sigbus["pid"], sigbus["tid"]) == ("i", "t", 1201, 1201)


def test_update_phases_nest_as_async_slices() -> None:
    rec = TraceRecorder()
    _scenario_trace(rec)
    doc = _parse(rec.to_bytes())
    seq = [(e["ph"], e["name"]) for e in doc["traceEvents"] if e["ph"] in "be"]
    assert seq == [
        ("b", "svn update"),
        ("b", "lock"),
        ("e", "lock"),
        ("b", "zap"),
        ("e", "zap"),
        ("b", "eupdatesvn"),
        ("e", "eupdatesvn"),
        ("b", "unlock"),
        ("e", "unlock"),
        ("e", "svn update"),
    ]
    assert {e["id"] for e in doc["traceEvents"] if e["ph"] in "be"} == {"0x1"}
    assert {e["pid"] for e in doc["traceEvents"] if e["ph"] in "be"} == {KERNEL_PID}


def test_nested_begin_end_parent_precedes_child() -> None:
    rec = TraceRecorder()
    app = rec.process(10, "app")
    rec.begin(app, "outer", 100, "ioctl")
    rec.begin(app, "inner", 100, "encls")
    rec.end(app, 150)
    rec.end(app, 300, {"ret": 0})
    doc = _parse(rec.to_bytes())
    xs = [(e["name"], e["ts"], e["dur"]) for e in doc["traceEvents"] if e["ph"] == "X"]
    assert xs == [("outer", 0.1, 0.2), ("inner", 0.1, 0.05)]
    _assert_well_formed(doc)


def test_unfinished_slice_closed_at_last_time() -> None:
    rec = TraceRecorder()
    app = rec.process(10, "app")
    rec.begin(app, "SGX_IOC_ENCLAVE_INIT", 100, "ioctl")
    rec.slice(app, "EINIT", 200, 800, "encls")
    doc = _parse(rec.to_bytes())
    init = next(e for e in doc["traceEvents"] if e.get("name") == "SGX_IOC_ENCLAVE_INIT")
    assert (init["ts"], init["dur"], init["args"]) == (0.1, 0.9, {"unfinished": True})


def test_same_inputs_same_bytes(tmp_path: Path) -> None:
    outs = []
    for i in range(2):
        rec = TraceRecorder(metadata={"scenario": "demo"})
        _scenario_trace(rec)
        outs.append(rec.write(tmp_path / f"t{i}.json").read_bytes())
    assert outs[0] == outs[1]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda r, t: r.slice(t, "X", 0, 1, "nope"), "category"),
        (lambda r, t: r.slice(t, "X", -1, 1, "encls"), "start_ns"),
        (lambda r, t: r.slice(t, "X", 0, True, "encls"), "dur_ns"),
        (lambda r, t: r.slice(t, "X", 0.5, 1, "encls"), "start_ns"),
        (lambda r, t: r.slice(t, "", 0, 1, "encls"), "name"),
        (lambda r, t: r.slice(Track(77, 77), "X", 0, 1, "encls"), "unknown track"),
        (lambda r, t: r.slice(t, "X", 0, 1, "encls", {"a": [1]}), "args"),
        (lambda r, t: r.slice(t, "X", 0, 1, "encls", {"a": float("nan")}), "finite"),
        (lambda r, t: r.slice(t, "X", 0, 1, "encls", {1: 2}), "key"),
        (lambda r, t: r.end(t, 5), "no open slice"),
        (lambda r, t: r.counter(t, "EPC", 0, {}), "counter"),
        (lambda r, t: r.counter(t, "EPC", 0, {"used": "many"}), "numbers"),
        (lambda r, t: r.instant(t, "SIGBUS", 0, "fault", scope="x"), "scope"),
        (lambda r, t: r.process(CPU_PID, "evil"), "pid"),
        (lambda r, t: r.thread(999, 1000, "orphan"), "not registered"),
        (lambda r, t: r.cpu(-1), "cpu"),
        (lambda r, t: r.async_slice("zap", 0, 1, async_id=-1), "async_id"),
    ],
)
def test_bad_input_raises_invalid_argument(call: Any, match: str) -> None:
    rec = TraceRecorder()
    track = rec.process(5, "app")
    with pytest.raises(InvalidArgument, match=match):
        call(rec, track)


def test_end_before_begin_raises() -> None:
    rec = TraceRecorder()
    app = rec.process(5, "app")
    rec.begin(app, "x", 100, "ioctl")
    with pytest.raises(InvalidArgument, match="before the slice"):
        rec.end(app, 99)


def test_bad_budget_raises() -> None:
    with pytest.raises(InvalidArgument, match="max_bytes"):
        TraceRecorder(max_bytes=10)
    with pytest.raises(InvalidArgument, match="max_events"):
        TraceRecorder(max_events=True)


# ------------------------------------------------------------------ budget


def test_coalescing_keeps_counts_and_sums_pages() -> None:
    rec = TraceRecorder(max_events=16)
    ksgxd = rec.ksgxd()
    for i in range(100):
        rec.slice(ksgxd, "sgx_reclaim_pages", i * 1000, 500, "reclaim", {"pages": 16, "node": "0"})
    doc = _parse(rec.to_bytes())
    xs = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    assert len(xs) == 1
    assert xs[0]["args"] == {"pages": 1600, "node": "0", "count": 100, "busy_ns": 50_000}
    assert (xs[0]["ts"], xs[0]["dur"]) == (0.0, 99.5)
    assert doc["otherData"]["budget"]["coalesced"] == 99
    assert doc["otherData"]["dropped"] == 0


def test_coalescing_never_straddles_an_open_parent() -> None:
    """EADD batches inside two ioctls stay two slices, each inside its ioctl."""
    rec = TraceRecorder(max_events=16)
    app = rec.process(9, "app")
    for i in range(40):  # fill the budget so that coalescing is on
        rec.slice(rec.ksgxd(), "EWB" if i % 2 else "ELDU", i * 10, 5, "reclaim")
    rec.slice(app, "EADD", 1_000, 100, "encls", {"pages": 8})
    rec.begin(app, "SGX_IOC_ENCLAVE_ADD_PAGES", 2_000, "ioctl")
    rec.slice(app, "EADD", 2_100, 100, "encls", {"pages": 8})
    rec.end(app, 2_500)
    doc = _parse(rec.to_bytes())
    xs = [(e["name"], e["ts"], e["dur"]) for e in doc["traceEvents"] if e["ph"] == "X" and e["pid"] == 9]
    assert xs == [("EADD", 1.0, 0.1), ("SGX_IOC_ENCLAVE_ADD_PAGES", 2.0, 0.5), ("EADD", 2.1, 0.1)]
    _assert_well_formed(doc)


def test_parent_recorded_after_children_still_nests() -> None:
    """A parent given with slice() after its children may land in a merged gap: clipped, still nested."""
    rec = TraceRecorder(max_events=16)
    app = rec.process(9, "app")
    for i in range(40):
        rec.slice(rec.ksgxd(), "EWB" if i % 2 else "ELDU", i * 10, 5, "reclaim")
    rec.slice(app, "EADD", 1_000, 100, "encls")
    rec.slice(app, "EADD", 2_100, 100, "encls")  # merged with the first while coalescing
    rec.slice(app, "SGX_IOC_ENCLAVE_ADD_PAGES", 2_000, 500, "ioctl")
    doc = _parse(rec.to_bytes())
    xs = [(e["name"], e["ts"], e["dur"]) for e in doc["traceEvents"] if e["ph"] == "X" and e["pid"] == 9]
    assert xs == [("EADD", 1.0, 1.0), ("SGX_IOC_ENCLAVE_ADD_PAGES", 2.0, 0.5)]
    _assert_well_formed(doc)


def test_finest_category_dropped_first_and_counted() -> None:
    rec = TraceRecorder(max_events=64)
    app = rec.process(7, "app")
    cpu = rec.cpu(0)
    for i in range(1000):
        # Alternating names defeat coalescing, so the budget has to drop a category.
        rec.slice(app, "EENTER" if i % 2 else "EEXIT", i * 100, 10, "enclu")
        rec.slice(cpu, "EADD" if i % 2 else "EEXTEND", i * 100, 10, "encls")
    rec.async_slice("svn update", 200_000, 10)
    doc = _parse(rec.to_bytes())
    budget = doc["otherData"]["budget"]
    assert budget["dropped"]["enclu"] > 0
    assert DROP_ORDER.index("enclu") < DROP_ORDER.index("encls")
    cats = {e.get("cat") for e in doc["traceEvents"] if e["ph"] != "M"}
    assert "enclu" not in cats
    assert "update" in cats  # the update phases are never dropped
    # Every recorded slice is either in the file (with its count) or counted as dropped.
    kept = sum(e.get("args", {}).get("count", 1) for e in doc["traceEvents"] if e["ph"] == "X")
    assert kept + doc["otherData"]["dropped"] + budget["truncated"] == 2000
    _assert_well_formed(doc)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3),  # track
            st.sampled_from(["EADD", "EEXTEND", "EENTER", "EWB"]),
            st.sampled_from(CATEGORIES[:7]),
            st.integers(0, 10_000),  # start
            st.integers(0, 500),  # dur
            st.integers(0, 64),  # pages
        ),
        max_size=300,
    ),
    st.integers(16, 40),
)
def test_budget_conserves_slices_and_stays_well_formed(events: list[Any], max_events: int) -> None:
    """Whatever the budget does, slices are kept (with counts), dropped or truncated, never lost."""

    def build() -> bytes:
        rec = TraceRecorder(max_events=max_events)
        tracks = [rec.cpu(0), rec.cpu(1), rec.ksgxd(), rec.process(42, "app")]
        for tr, name, cat, start, dur, pages in events:
            rec.slice(tracks[tr], name, start, dur, cat, {"pages": pages})
        return rec.to_bytes()

    data = build()
    assert data == build()
    doc = _parse(data)
    budget = doc["otherData"]["budget"]
    kept = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    assert len(kept) <= max_events
    total = sum(e["args"].get("count", 1) for e in kept)
    assert total + doc["otherData"]["dropped"] + budget["truncated"] == len(events)
    assert sum(e["args"]["pages"] for e in kept if "pages" in e["args"]) <= sum(p for *_, p in events)
    for evs in _slices_by_track(doc).values():
        ts = [e["ts"] for e in evs]
        assert ts == sorted(ts)
        assert all(e["dur"] >= 0 for e in evs)


def test_byte_budget_is_enforced_at_write() -> None:
    rec = TraceRecorder(max_bytes=200_000)
    cpus = [rec.cpu(i) for i in range(4)]
    app = rec.process(3, "app")
    for i in range(20_000):
        rec.slice(cpus[i % 4], "EADD" if i % 8 else "EEXTEND", i * 10, 5, "encls", {"note": "x" * 40})
        rec.slice(app, "EENTER" if i % 2 else "EEXIT", i * 10, 5, "enclu")
    rec.async_slice("zap", 0, 10)
    data = rec.to_bytes()
    assert len(data) <= 200_000
    doc = _parse(data)
    assert {n for n in _names(doc, "thread_name").values()} == {"CPU 0", "CPU 1", "CPU 2", "CPU 3", "app"}
    assert doc["otherData"]["dropped"] > 0
    assert any(e["ph"] == "b" and e["name"] == "zap" for e in doc["traceEvents"])


@pytest.mark.no_cover  # a size test: the recorder's code is covered by the tests above
def test_flood_of_millions_stays_under_50mb(tmp_path: Path) -> None:
    """A synthetic flood (1.6 M events) with the default budget writes < 50 MB, tracks intact."""
    rec = TraceRecorder(metadata={"scenario": "flood"})
    cpus = [rec.cpu(i) for i in range(16)]
    ksgxd = rec.ksgxd()
    procs = [rec.process(100 + i, f"enclave-app-{i}") for i in range(32)]
    machine = rec.machine()
    t = 0
    for i in range(400_000):
        t += 100
        rec.slice(procs[i % 32], "EENTER" if i & 1 else "ERESUME", t, 40, "enclu")
        rec.slice(cpus[i % 16], "EADD" if i % 3 else "EEXTEND", t, 60, "encls", {"pages": 1, "eid": i % 97})
        rec.slice(ksgxd, "sgx_reclaim_pages", t, 30, "reclaim", {"pages": 16})
        rec.counter(machine, "EPC pages", t, {"used": i % 50_000})
    rec.async_slice("svn update", t, 1_000_000)
    rec.async_slice("zap", t, 900_000, args={"pages": 4_000_000})
    rec.counter(machine, "EPC pages", t + 1_000_000, {"used": 7})
    path = rec.write(tmp_path / "trace.json")
    size = path.stat().st_size
    assert size < LIMIT
    doc = _parse(path.read_bytes())
    threads = set(_names(doc, "thread_name").values())
    assert {f"CPU {i}" for i in range(16)} | {"ksgxd"} <= threads
    procs_named = set(_names(doc, "process_name").values())
    assert {f"enclave-app-{i}" for i in range(32)} | {"machine", "kernel"} <= procs_named
    budget = doc["otherData"]["budget"]
    assert budget["dropped"].get("enclu", 0) > 0
    assert budget["coalesced"] > 0
    # The reclaimer's track survives as coalesced slices; the update phases survive whole.
    assert any(e["ph"] == "X" and e["tid"] == KERNEL_PID + 1 for e in doc["traceEvents"])
    assert [e["name"] for e in doc["traceEvents"] if e["ph"] == "b"] == ["svn update", "zap"]
    # Thinning keeps the last sample of each bucket, so the final EPC value is exact.
    last = [e for e in doc["traceEvents"] if e["ph"] == "C"][-1]
    assert last["args"] == {"used": 7}
    _assert_well_formed(doc)

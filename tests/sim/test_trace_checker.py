"""The independent trace checker: it catches what it must, and passes what the recorder writes."""

from __future__ import annotations

from tests.sim.trace_checker import check_trace

from sgxsim.sim.trace import TraceRecorder


def _doc(events: list[dict[str, object]]) -> dict[str, object]:
    return {"traceEvents": events}


def test_checker_catches_bad_nesting() -> None:
    assert check_trace(_doc([{"ph": "E", "pid": 1, "tid": 1, "ts": 1}]))
    assert check_trace(_doc([{"ph": "B", "pid": 1, "tid": 1, "ts": 1, "name": "x"}]))
    e_first = [
        {"ph": "e", "cat": "u", "id": "0x1", "name": "z", "ts": 5},
        {"ph": "b", "cat": "u", "id": "0x1", "name": "z", "ts": 5},
    ]
    assert check_trace(_doc(e_first))
    crossing = [
        {"ph": "b", "cat": "u", "id": "0x1", "name": "zap", "ts": 1},
        {"ph": "b", "cat": "u", "id": "0x1", "name": "lock", "ts": 2},
        {"ph": "e", "cat": "u", "id": "0x1", "name": "zap", "ts": 3},
        {"ph": "e", "cat": "u", "id": "0x1", "name": "lock", "ts": 4},
    ]
    assert check_trace(_doc(crossing))
    overlap = [
        {"ph": "X", "pid": 1, "tid": 2, "ts": 0, "dur": 5, "name": "a"},
        {"ph": "X", "pid": 1, "tid": 2, "ts": 3, "dur": 5, "name": "b"},
    ]
    assert check_trace(_doc(overlap))


def test_recorder_output_passes_with_zero_length_and_nested_async_slices() -> None:
    t = TraceRecorder()
    t.async_slice("SVN update", 100, 50, async_id=1)
    t.async_slice("EPC locked", 100, 40, async_id=1)
    t.async_slice("lock", 100, 0, async_id=1)
    t.async_slice("zap", 100, 30, async_id=1)
    t.async_slice("eupdatesvn", 130, 0, async_id=1)
    t.async_slice("unlock", 130, 10, async_id=1)
    t.async_slice("late", 145, 20, async_id=1)  # clipped to its parent's end
    t.slice(t.cpu(0), "outer", 0, 10, "kernel")
    t.slice(t.cpu(0), "inner", 2, 3, "kernel")
    assert check_trace(t.to_bytes()) == []

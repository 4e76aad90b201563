"""The timeline and policy-comparison figures: real PNGs, non-trivial, byte-for-byte deterministic."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from matplotlib.image import imread

from sgxsim.errors import InvalidArgument
from sgxsim.sim import timeline as timeline_mod
from sgxsim.sim.timeline import (
    COMPARISON_METRICS,
    STATUS_COLORS,
    TimelineData,
    UpdateWindow,
    format_ns,
    plot_comparison,
    plot_timeline,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
S = 1_000_000_000
OLD_SVN = "0e0e0203ff8003000000000000000000"
NEW_SVN = "0e0e0303ff8003000000000000000000"


def _run_data(seed: int = 1, enclaves: int = 12) -> TimelineData:
    """A scenario-shaped run: enclaves grow, the update zaps them at 3 s, they restart."""
    rng = random.Random(seed)
    data = TimelineData(epc_capacity_pages=60_000, end_ns=6 * S)
    for e in range(enclaves):
        name = f"enclave-{e}"
        t, pages = rng.randrange(0, S // 2), 0
        while t < 3 * S:
            pages = max(0, pages + rng.randrange(-100, 400))
            data.add_epc(name, t, pages)
            t += rng.randrange(S // 100, S // 20)
        data.add_epc(name, 3 * S + S // 10, 0)  # zapped with the rest of the EPC
        t = 3 * S + S // 5 + rng.randrange(0, S // 2)
        while t < 6 * S:
            pages = max(0, pages + rng.randrange(-100, 400))
            data.add_epc(name, t, pages)
            t += rng.randrange(S // 100, S // 20)
    data.add_update_window(3 * S, 3 * S + S // 10, "updated")
    data.add_update_window(5 * S, 5 * S + S // 50, "failed: EIO")
    data.add_cpusvn_step(3 * S + S // 10, OLD_SVN, NEW_SVN)
    for e in range(6):
        data.add_verdict(S + e * S // 10, f"enclave-{e}", "OutOfDate", e % 2 == 0)
        data.add_verdict(4 * S + e * S // 10, f"enclave-{e}", "UpToDate", True)
    data.add_verdict(5 * S, "enclave-9", "Revoked", False, "PCK revoked")
    for i in range(40):
        data.add_refusal(3 * S + i * S // 400, "EBUSY" if i % 3 else "SIGBUS")
    return data


def _distinct_colors(path: Path) -> int:
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 500 and img.shape[1] > 800
    flat = (img[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
    return len(np.unique(flat, axis=0))


def test_timeline_png_is_real_and_nontrivial(tmp_path: Path) -> None:
    path = plot_timeline(_run_data(), tmp_path / "timeline.png", "demo (rfc-v2-teardown, seed 1)")
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 20_000
    assert _distinct_colors(path) > 200
    assert b"Matplotlib" not in data  # the Software text chunk is removed


@pytest.mark.no_cover  # draws the same plots as the tests around it, twice
def test_timeline_png_bytes_are_deterministic(tmp_path: Path) -> None:
    a = plot_timeline(_run_data(), tmp_path / "a.png", "demo").read_bytes()
    b = plot_timeline(_run_data(), tmp_path / "b.png", "demo").read_bytes()
    assert a == b
    c = plot_timeline(_run_data(seed=2), tmp_path / "c.png", "demo").read_bytes()
    assert c != a


def test_top_n_groups_the_rest_as_other(tmp_path: Path) -> None:
    data = _run_data(enclaves=14)
    few = plot_timeline(data, tmp_path / "few.png", "t", top_n=2).read_bytes()
    many = plot_timeline(data, tmp_path / "many.png", "t", top_n=20).read_bytes()
    assert few != many


def test_status_colors_follow_the_brief() -> None:
    assert STATUS_COLORS["UpToDate"] == "#2ca02c"  # green
    assert STATUS_COLORS["OutOfDate"] == "#ff7f0e"  # orange
    assert STATUS_COLORS["Revoked"] == "#d62728"  # red


def test_empty_timeline_still_draws(tmp_path: Path) -> None:
    path = plot_timeline(TimelineData(), tmp_path / "empty.png", "nothing happened")
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    assert _distinct_colors(path) > 2


def test_many_refusals_are_binned(tmp_path: Path) -> None:
    data = TimelineData()
    for i in range(12_000):
        data.add_refusal(i * 1000, "EBUSY" if i % 2 else "SIGBUS")
    path = plot_timeline(data, tmp_path / "binned.png", "storm")
    assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_last_ns() -> None:
    data = TimelineData()
    assert data.last_ns() == 0
    data.add_epc("a", 10, 1)
    data.add_update_window(5, 40, "updated")
    data.add_refusal(30, "EBUSY")
    assert data.last_ns() == 40
    data.end_ns = 100
    assert data.last_ns() == 100


def test_update_window_outcome() -> None:
    assert UpdateWindow(0, 1, "updated").succeeded
    assert not UpdateWindow(0, 1, "failed: EIO").succeeded
    assert not UpdateWindow(0, 1, "EAGAIN after 10 tries").succeeded


def test_cpusvn_is_normalized_to_lowercase() -> None:
    data = TimelineData()
    data.add_cpusvn_step(1, OLD_SVN.upper(), NEW_SVN)
    assert data.cpusvn_steps[0].old == OLD_SVN


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda d: d.add_epc("a", -1, 0), "t_ns"),
        (lambda d: d.add_epc("a", 0, -5), "pages"),
        (lambda d: d.add_epc("", 0, 5), "enclave"),
        (lambda d: d.add_update_window(10, 5, "updated"), "before it starts"),
        (lambda d: d.add_cpusvn_step(0, "02", NEW_SVN), "32 hex"),
        (lambda d: d.add_cpusvn_step(0, OLD_SVN, "zz" * 16), "32 hex"),
        (lambda d: d.add_verdict(0, "a", "UpToDate", 1), "accepted"),
        (lambda d: d.add_refusal(True, "EBUSY"), "t_ns"),
    ],
)
def test_bad_timeline_input(call: object, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        call(TimelineData())  # type: ignore[operator]


def test_plot_timeline_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="TimelineData"):
        plot_timeline({}, tmp_path / "x.png", "t")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="top_n"):
        plot_timeline(TimelineData(), tmp_path / "x.png", "t", top_n=0)


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0 ns"),
        (830, "830 ns"),
        (1_500, "1.500 us"),
        (12_000_000, "12.000 ms"),
        (1_500_000_000, "1.500 s"),
    ],
)
def test_format_ns(ns: int, text: str) -> None:
    assert format_ns(ns) == text


@given(st.integers(0, 10**15))
def test_format_ns_round_trips_to_three_decimals(ns: int) -> None:
    value, unit = format_ns(ns).split()
    scale = {"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9}[unit]
    assert abs(float(value) * scale - ns) <= 0.0005 * scale + 1e-9 * ns


# ------------------------------------------------------------------ comparison


def _rows() -> list[dict[str, object]]:
    return [
        {
            "policy": "rfc-v2-teardown",
            "time_to_attested_ns": 1_200_000_000,
            "enclaves_destroyed": 12,
            "enclave_downtime_ns": 5_000_000_000,
            "refused_ioctls": 30,
            "faults": 12,
            "epc_pages_zapped": 20_000,
            "update_duration_ns": 40_000_000,
        },
        {
            "policy": "explicit-trigger",
            "time_to_attested_ns": None,  # never attested the new CPUSVN
            "enclaves_destroyed": 0,
            "enclave_downtime_ns": 0,
            "refused_ioctls": 3,
            "faults": 0,
            "epc_pages_zapped": 0,
            "update_duration_ns": 1_000_000,
        },
        {"policy": "linux-6.19-on-open", "time_to_attested_ns": 200_000_000, "update_duration_ns": 200_000},
    ]


def test_comparison_png(tmp_path: Path) -> None:
    a = plot_comparison(_rows(), tmp_path / "a.png").read_bytes()
    assert a.startswith(PNG_SIGNATURE)
    assert len(a) > 20_000
    assert _distinct_colors(tmp_path / "a.png") > 50
    b = plot_comparison(_rows(), tmp_path / "b.png").read_bytes()
    assert a == b


def test_comparison_metrics_cover_the_brief() -> None:
    keys = [k for k, _, _ in COMPARISON_METRICS]
    assert keys == [
        "time_to_attested_ns",
        "enclaves_destroyed",
        "enclave_downtime_ns",
        "refused_ioctls",
        "faults",
        "epc_pages_zapped",
        "update_duration_ns",
        "new_cpusvn_reached",
        "new_cpusvn_attested",
        "verdicts_refused",
        "locked_window_ns",
        "ioctls_refused_in_window",
        "faults_sigbus_in_window",
        "ipis_sent",
        "aex_by_ipi",
        "release_waits",
        "vcpu_halted_ns",
    ]
    # comparison.png leaves none out (so no policy looks better by what is not drawn).
    drawn = [k for _, panel in timeline_mod._PANELS for k in panel]
    assert sorted(drawn) == sorted(keys) and len(timeline_mod._PANELS) <= 12


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        ([], "non-empty"),
        ([{"enclaves_destroyed": 1}], "policy"),
        ([{"policy": "p", "faults": "many"}], "faults"),
        ([{"policy": "p", "faults": float("inf")}], "faults"),
        (["p"], "mapping"),
    ],
)
def test_comparison_rejects_bad_rows(tmp_path: Path, rows: list[object], match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        plot_comparison(rows, tmp_path / "x.png")  # type: ignore[arg-type]

"""Benchmark: a 2 x 512 GiB EPC machine, and EREMOVE of 1 Mi pages through the batch path.

Run by hand (not part of the test run)::

    python benchmarks/bench_epc.py [--section-gib 512] [--sections 2] [--pages 1048576] [--repeat 3]

(a) Boot: seconds to construct ``Machine`` with ``--sections`` EPC sections of ``--section-gib`` GiB,
    the EPCM's host bytes per EPC page (``Epc.host_bytes_per_page``) and the process RSS growth
    (the EPCM arrays are zero-filled lazily by the OS, so untouched entries cost no RSS).
(c) EREMOVE of ``--pages`` valid REG pages of one enclave (EADDed with ``eadd_batch``, zero
    pages, unmeasured) through ``eremove_batch``, against a plain numpy fill of the same EPCM
    arrays at the same indices (the floor any vectorized EREMOVE must pay); prints both times
    and the ratio, in wall-clock and in process CPU time (``time.process_time``: the figure to
    trust on a loaded machine). Once with the pages in EPC order, once shuffled (``eremove_batch``
    clears a consecutive run through slices; a shuffled batch takes the index-array path). The EADD
    batch time is printed too. Best of ``--repeat``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from sgxsim.hw.arch import PAGE_SIZE, EnclsLeaf, Pageinfo, PageType, Secs, SgxStatus, secinfo_flags
from sgxsim.hw.encls import eadd_batch, eremove_batch
from sgxsim.hw.epc import EpcSectionConfig
from sgxsim.hw.machine import DEFAULT_EPC_BASE, Machine, MachineConfig
from sgxsim.rand import Rng

GIB = 1 << 30
ENCLAVE_BASE = 1 << 40


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def boot(sections: int, section_gib: int) -> tuple[Machine, float, int]:
    cfg = MachineConfig(
        sockets=sections,
        epc_sections=tuple(
            EpcSectionConfig(DEFAULT_EPC_BASE + i * (1 << 40), section_gib * GIB, i) for i in range(sections)
        ),
    )
    before = rss_bytes()
    start = time.perf_counter()
    m = Machine(cfg, Rng(1))
    elapsed = time.perf_counter() - start
    return m, elapsed, rss_bytes() - before


def make_enclave(m: Machine, npages: int) -> tuple[int, np.ndarray, float]:
    """ECREATE an enclave big enough for ``npages`` and EADD them with eadd_batch; (SECS, pages, secs)."""
    size = 1 << max(13, (npages * PAGE_SIZE - 1).bit_length())
    secs_phys = m.epc.phys_of(0)
    src = m.dram.alloc_page()
    m.dram.write(src, Secs(size=size, base=ENCLAVE_BASE, ssa_frame_size=1, attributes=4, xfrm=3).pack())
    pageinfo = m.dram.alloc_page()
    secinfo = m.dram.alloc_page()  # never written: an all-zero SECINFO (PT_SECS), as Linux passes
    m.dram.write(pageinfo, Pageinfo(linaddr=0, srcpge=src, secinfo=secinfo, secs=0).pack())
    assert m.encls(0, EnclsLeaf.ECREATE, pageinfo, secs_phys) == SgxStatus.SUCCESS
    phys = np.array([m.epc.phys_of(1)], dtype=np.int64) + np.arange(npages, dtype=np.int64) * PAGE_SIZE
    lin = ENCLAVE_BASE + np.arange(npages, dtype=np.int64) * PAGE_SIZE
    start = time.perf_counter()
    done, result = eadd_batch(m, 0, secs_phys, phys, lin, secinfo_flags(PageType.PT_REG, 0x3))
    elapsed = time.perf_counter() - start
    assert (done, result) == (npages, SgxStatus.SUCCESS), (done, result)
    return secs_phys, phys, elapsed


def numpy_fill(m: Machine, phys: np.ndarray) -> tuple[float, float]:
    """Zero the EPCM arrays at the pages' indices (index computation included); (wall, CPU) seconds."""
    e = m.epc.epcm
    first = m.epc.sections[0]
    start, cpu0 = time.perf_counter(), time.process_time()
    idx = (phys - first.base) >> 12
    for name in (
        "valid",
        "blocked",
        "pending",
        "modified",
        "pr",
        "pt",
        "rwx",
        "secs",
        "linaddr",
        "block_epoch",
    ):
        getattr(e, name)[idx] = 0
    return time.perf_counter() - start, time.process_time() - cpu0


def measure(m: Machine, npages: int, repeat: int, order: np.ndarray | None) -> tuple[float, ...]:
    """Best (EADD wall, EREMOVE wall, EREMOVE CPU, fill wall, fill CPU) over ``repeat`` rounds."""
    best = [float("inf")] * 5
    for _ in range(repeat):
        secs_phys, phys, eadd_s = make_enclave(m, npages)
        if order is not None:
            phys = phys[order]
        start, cpu0 = time.perf_counter(), time.process_time()
        status = eremove_batch(m, 0, phys)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
        assert not status.any(), "every EREMOVE must succeed"
        assert m.encls(0, EnclsLeaf.EREMOVE, 0, secs_phys) == SgxStatus.SUCCESS
        # Same arrays, same indices: make them valid again, then time the plain fill.
        make_enclave(m, npages)
        fill_wall, fill_cpu = numpy_fill(m, phys)
        m.epc.epcm.valid[0] = False  # drop the SECS by hand too (the fill bypassed child counts)
        m.epc.secs_state.clear()
        m.epc.contents.clear()
        best = [min(x, y) for x, y in zip(best, (eadd_s, wall, cpu, fill_wall, fill_cpu), strict=True)]
    return tuple(best)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", type=int, default=2)
    ap.add_argument("--section-gib", type=int, default=512)
    ap.add_argument("--pages", type=int, default=1 << 20)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    m, boot_s, rss = boot(args.sections, args.section_gib)
    print(
        f"(a) boot {args.sections} x {args.section_gib} GiB EPC: {boot_s * 1e3:.2f} ms, "
        f"{m.epc.npages:,} EPC pages, EPCM {m.epc.host_bytes_per_page():.1f} host bytes/page "
        f"({m.epc.epcm.nbytes / GIB:.2f} GiB address space), RSS growth {rss / (1 << 20):.1f} MiB"
    )

    n = args.pages
    shuffled = np.random.default_rng(1).permutation(n)
    for label, order in (("in EPC order", None), ("shuffled", shuffled)):
        eadd_s, wall, cpu, fill_wall, fill_cpu = measure(m, n, args.repeat, order)
        if order is None:
            per_page = eadd_s / n * 1e9
            print(f"(c) EADD of {n:,} zero pages via eadd_batch: {eadd_s:.3f} s ({per_page:.0f} ns/page)")
        print(
            f"(c) EREMOVE of {n:,} valid pages {label} via eremove_batch: {wall:.4f} s wall "
            f"({wall / n * 1e9:.0f} ns/page), {cpu:.4f} s CPU; numpy fill of the same EPCM arrays: "
            f"{fill_wall:.4f} s wall, {fill_cpu:.4f} s CPU; ratio {wall / fill_wall:.2f}x wall, "
            f"{cpu / fill_cpu:.2f}x CPU"
        )
    charged = m.clock.now_ns() / 1e9
    print(f"    RSS now {rss_bytes() / (1 << 20):.0f} MiB; simulated time charged {charged:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

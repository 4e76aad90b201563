"""Benchmark: the RFC v2 SVN-update procedure (lock, zap every EPC page, EUPDATESVN, unlock) on
EPC sizes from 64 MiB to 512 GiB, fully used by many enclaves with some pages swapped out.

Run by hand (not part of the test run)::

    python benchmarks/bench_svn_scale.py [--sizes 64M,8G,64G,512G] [--swap 2048]

For each size: a 2-socket machine with two EPC sections (half the EPC each), enclaves built
through the real ioctl path (SGX_IOC_ENCLAVE_CREATE + ADD_PAGES from a reused 16 MiB source
buffer, unmeasured pages take the hardware batch path; enclaves are not EINIT'd, which the zap
does not care about), ``--swap`` extra pages added once the EPC is full so the reclaimer evicts
that many (EBLOCK/ETRACK/EWB into the backing store), then a late microcode load that raises the
SGX SVN. Prints per size: pages, enclaves, pages swapped out, fill wall time, the procedure's
simulated duration and host wall time, simulated/wall, teardown wall time, peak RSS, and
checks that every page is free again and CPUSVN rose.
"""

from __future__ import annotations

import argparse
import resource
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.kernel.kernel_helpers import create_enclave

from sgxsim.hw.arch import PAGE_SIZE, PageType, secinfo_flags
from sgxsim.hw.cpu import MicrocodePatch
from sgxsim.hw.epc import EpcSectionConfig
from sgxsim.hw.machine import DEFAULT_EPC_BASE, DEFAULT_EPC_STRIDE, Machine, MachineConfig
from sgxsim.kernel import uapi as U  # noqa: N812
from sgxsim.kernel.main import Kernel, validate_epc
from sgxsim.kernel.process import Process
from sgxsim.rand import Rng

CHUNK = 4096  # pages per ADD_PAGES call (a 16 MiB source buffer, reused)
ENCLAVE_PAGES = 1 << 21  # at most 8 GiB of EPC per enclave


def parse_size(text: str) -> int:
    units = {"M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1].upper()]


def machine(epc_bytes: int) -> Machine:
    half = epc_bytes // 2
    secs = (
        EpcSectionConfig(DEFAULT_EPC_BASE, half, 0),
        EpcSectionConfig(DEFAULT_EPC_BASE + DEFAULT_EPC_STRIDE, half, 1),
    )
    return Machine(MachineConfig(sockets=2, cpus_per_socket=4, epc_sections=secs), Rng(1))


def build(k: Kernel, name: str, n: int, cpu: int) -> Process:
    """A process with one enclave of ``n`` unmeasured REG pages (ADD_PAGES in CHUNK-page calls)."""
    p = Process(k, name, cpu=cpu)
    size = 1 << max(16, (n * PAGE_SIZE - 1).bit_length())
    fd, _ = create_enclave(p, size)
    src = p.mmap(0, CHUNK * PAGE_SIZE, U.PROT_READ | U.PROT_WRITE, U.MAP_PRIVATE | U.MAP_ANONYMOUS, -1, 0)
    si = p.alloc(struct.pack("<Q", secinfo_flags(PageType.PT_REG, 3)) + bytes(56))
    for off in range(0, n, CHUNK):
        c = min(CHUNK, n - off)
        arg = U.sgx_enclave_add_pages(src=src, offset=off * PAGE_SIZE, length=c * PAGE_SIZE, secinfo=si)
        p.ioctl(fd, U.SGX_IOC_ENCLAVE_ADD_PAGES, arg)
    return p


def fill(k: Kernel, swap: int) -> tuple[list[Process], float]:
    """Enclaves of up to ENCLAVE_PAGES pages until the EPC is full (each also holds a SECS and
    one VA page per 512 pages), then one more of ``swap`` pages, which the reclaimer makes room
    for by evicting as many."""
    t0 = time.perf_counter()
    procs: list[Process] = []
    ncpu = len(k.machine.cpus)
    total = k.npages
    count = -(-total // ENCLAVE_PAGES)
    # Pages per enclave so that pages + SECS + VA pages (one per 512) fill the EPC.
    n = (total // count - 1) * 512 // 513
    for i in range(count):
        procs.append(build(k, f"encl{i}", n, i % ncpu))
    if swap > 0:
        procs.append(build(k, "oversubscriber", swap, len(procs) % ncpu))
    return procs, time.perf_counter() - t0


def run(epc_bytes: int, swap: int) -> dict[str, float | int | str]:
    m = machine(epc_bytes)
    k = Kernel(m)
    total = k.npages
    procs, fill_s = fill(k, swap)
    used = k.nr_used_pages()
    swapped = k.stats.get("pages_reclaimed", 0)
    cur = m.cpus[0].ucode
    patch = MicrocodePatch.with_svns(cur.revision + 1, base=cur.svn[0], late_microcode=cur.svn[1] + 1)
    t0 = time.perf_counter()
    ret = k.svn.microcode_reload(patch)
    wall = time.perf_counter() - t0
    rec = k.svn.updates[-1]
    sim_ns = rec.end_ns - rec.start_ns
    assert ret == 0 and rec.result == 0, rec.as_dict()
    assert m.cpusvn == patch.svn
    t1 = time.perf_counter()
    for p in procs:
        p.exit()
    teardown = time.perf_counter() - t1
    rep = validate_epc(k, expect_empty=True)
    assert not rep.problems, rep.problems[:5]
    assert k.sgx_nr_free_pages.read() == total
    rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)
    return {
        "epc": f"{epc_bytes >> 20} MiB" if epc_bytes < (1 << 30) else f"{epc_bytes >> 30} GiB",
        "pages": total,
        "used": used,
        "enclaves": len(procs),
        "swapped": swapped,
        "zapped": rec.pages_zapped,
        "fill_s": round(fill_s, 2),
        "sim_s": round(sim_ns / 1e9, 4),
        "wall_s": round(wall, 3),
        "sim_per_wall": round(sim_ns / 1e9 / wall, 2) if wall else 0.0,
        "teardown_s": round(teardown, 2),
        "peak_rss_gib": round(rss_gib, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="64M,8G,64G,512G")
    ap.add_argument("--swap", type=int, default=2048, help="pages beyond the EPC (evicted)")
    args = ap.parse_args()
    keys = None
    for text in args.sizes.split(","):
        t0 = time.perf_counter()
        row = run(parse_size(text), args.swap)
        row["end_to_end_s"] = round(time.perf_counter() - t0, 1)
        if keys is None:
            keys = list(row)
            print("| " + " | ".join(keys) + " |")
            print("|" + "---|" * len(keys))
        print("| " + " | ".join(str(row[k_]) for k_ in keys) + " |", flush=True)


if __name__ == "__main__":
    main()

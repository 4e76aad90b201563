"""Driver benchmarks (run by hand: ``python benchmarks/bench_driver.py [--quick]``).

Measures host wall time (the model's simulated time is reported beside it):

1. build + EINIT + teardown of a 1 GiB enclave (a few measured pages, the rest unmeasured heap);
2. build + EINIT + teardown of 1,000 small enclaves;
3. a build with 4x EPC oversubscription (the reclaimer and ELDU at work);
4. Python-level cost per page of SGX_IOC_ENCLAVE_ADD_PAGES, page by page vs the hardware batch
   path, and of the bare hardware leaf both ways.
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.kernel.kernel_helpers import (
    build_enclave,
    create_enclave,
    enclave_pages,
    signing_key,
    small_machine,
)

from sgxsim.hw import encls as hw_encls
from sgxsim.hw.arch import PAGE_SIZE, EnclsLeaf, PageType, secinfo_flags
from sgxsim.kernel import uapi as U  # noqa: N812
from sgxsim.kernel.main import Kernel, KernelConfig, validate_epc
from sgxsim.kernel.process import Process


def _kernel(pages: int, batch: bool = True) -> Kernel:
    return Kernel(small_machine(pages), config=KernelConfig(use_batch=batch))


def _rate(n: int, dt: float) -> str:
    return f"{n / dt:,.0f} pages/s ({dt / n * 1e6:.1f} us/page)"


def bench_big(gib: float) -> None:
    heap = int(gib * (1 << 30)) // PAGE_SIZE
    k = _kernel(heap + 4096)
    p = Process(k, "big")
    t0 = time.perf_counter()
    encl = build_enclave(p, heap_pages=heap, mmap=True)
    t1 = time.perf_counter()
    encl.put(42)
    assert encl.get() == 42
    t2 = time.perf_counter()
    p.exit()
    t3 = time.perf_counter()
    assert not validate_epc(k, expect_empty=True).problems
    sim = k.machine.clock.now_ns() / 1e9
    print(
        f"[1] {gib:g} GiB enclave ({heap:,} heap pages): build+init {t1 - t0:.2f} s "
        f"({_rate(heap, t1 - t0)}), enter {t2 - t1:.3f} s, teardown {t3 - t2:.2f} s "
        f"({_rate(heap, t3 - t2)}); simulated {sim:.2f} s"
    )


def bench_many(n: int) -> None:
    k = _kernel(4096)
    p = Process(k, "many")
    t0 = time.perf_counter()
    for _ in range(n):
        e = build_enclave(p, heap_pages=1, mmap=False)
        p.munmap(e.op_addr, PAGE_SIZE)
        p.close(e.fd)
    dt = time.perf_counter() - t0
    assert not validate_epc(k, expect_empty=True).problems
    pages = n * len(enclave_pages(1))
    print(
        f"[2] {n:,} small enclaves ({pages:,} pages): {dt:.2f} s, {dt / n * 1e3:.2f} ms per enclave "
        f"(create+add+init+release), {_rate(pages, dt)}"
    )


def bench_oversubscribed(epc_pages: int, factor: int) -> None:
    k = _kernel(epc_pages)
    p = Process(k, "over")
    heap = epc_pages * factor
    t0 = time.perf_counter()
    encl = build_enclave(p, heap_pages=heap)
    t1 = time.perf_counter()
    from tests.kernel.kernel_helpers import OP_CHECK, OP_FILL, Op

    encl.call(Op(type=OP_FILL, value=7, addr=encl.heap, n=heap))
    _, out, _ = encl.call(Op(type=OP_CHECK, value=7, addr=encl.heap, n=heap))
    t2 = time.perf_counter()
    assert out.ret == 0
    p.exit()
    t3 = time.perf_counter()
    s = k.stats
    print(
        f"[3] {factor}x oversubscription ({heap:,} heap pages on {epc_pages:,} EPC pages): "
        f"build {t1 - t0:.2f} s "
        f"({_rate(heap, t1 - t0)}), fill+check {t2 - t1:.2f} s, teardown {t3 - t2:.2f} s; "
        f"EWB {s.get('ewb', 0):,}, ELDU {s.get('eldu', 0):,}, reclaim batches {s.get('reclaim_batches', 0):,}"
    )


def bench_add_path(pages: int) -> None:
    for batch in (False, True):
        k = _kernel(pages + 256, batch)
        p = Process(k, "add")
        fd, _ = create_enclave(p, 1 << (pages * PAGE_SIZE - 1).bit_length())
        src = p.alloc(pages * PAGE_SIZE)
        si = p.alloc(struct.pack("<Q", secinfo_flags(PageType.PT_REG, 3)) + bytes(56))
        t0 = time.perf_counter()
        p.ioctl(
            fd,
            U.SGX_IOC_ENCLAVE_ADD_PAGES,
            U.sgx_enclave_add_pages(src=src, offset=0, length=pages * PAGE_SIZE, secinfo=si),
        )
        dt = time.perf_counter() - t0
        print(f"[4] ADD_PAGES {'batch' if batch else 'per-page'}: {_rate(pages, dt)}")
        p.exit()
    # The bare leaf, one page at a time through Machine.encls vs eadd_batch.
    for batch in (False, True):
        k = _kernel(pages + 256)
        p = Process(k, "leaf")
        fd, base = create_enclave(p, 1 << (pages * PAGE_SIZE - 1).bit_length())
        encl = p.file(fd).private_data
        m = k.machine
        free = [k.sgx_alloc_epc_page_nowait() for _ in range(pages)]
        phys = np.array([k.phys(x) for x in free], dtype=np.int64)
        lin = base + np.arange(pages, dtype=np.int64) * PAGE_SIZE
        flags = secinfo_flags(PageType.PT_REG, 3)
        secs = k.phys(encl.secs_epc)
        t0 = time.perf_counter()
        if batch:
            done, _ = hw_encls.eadd_batch(m, 0, secs, phys, lin, flags, None)
            assert done == pages
        else:
            pi = m.dram.alloc_page()
            sip = m.dram.alloc_page()
            src = m.dram.alloc_page()
            m.dram.write(sip, struct.pack("<Q", flags) + bytes(56))
            for i in range(pages):
                m.dram.write(pi, struct.pack("<QQQQ", int(lin[i]), src, sip, secs))
                assert m.encls(0, EnclsLeaf.EADD, pi, int(phys[i]), 0) == 0
        dt = time.perf_counter() - t0
        print(f"[4] hardware EADD {'eadd_batch' if batch else 'one leaf per page'}: {_rate(pages, dt)}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller sizes (CI smoke)")
    args = ap.parse_args()
    signing_key()
    q = args.quick
    bench_big(0.0625 if q else 1.0)
    bench_many(50 if q else 1000)
    bench_oversubscribed(256 if q else 2048, 4)
    bench_add_path(2048 if q else 32768)


if __name__ == "__main__":
    main()

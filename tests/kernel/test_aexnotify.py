"""AEXNOTIFY end to end through the driver: ADD_PAGES of a TCS with FLAGS.AEXNOTIFY, EINIT, entry.

Linux allows SGX_ATTR_ASYNC_EXIT_NOTIFY in ``SGX_ATTR_UNPRIV_MASK`` (ioctl.c sgx_encl_create), so an
enclave with ATTRIBUTES.AEXNOTIFY needs no extra permission; its TCSs carry TCS.FLAGS.AEXNOTIFY
(EENTER #GP otherwise), which EADD must accept (bit 1 is not reserved).
"""

from __future__ import annotations

import errno
from dataclasses import replace

import pytest
from tests.kernel.kernel_helpers import (
    TCS1,
    TCS2,
    LoadedEnclave,
    add_pages,
    create_enclave,
    encl_size_for,
    enclave_pages,
    make_world,
    sign,
)

from sgxsim.hw import arch
from sgxsim.hw.arch import PAGE_SIZE, Attributes, Tcs
from sgxsim.kernel import uapi as U  # noqa: N812

AEXN = int(Attributes.MODE64BIT | Attributes.AEXNOTIFY)


def _pages(tcs_flags: int) -> list[tuple[int, bytes, int, bool]]:
    pages = enclave_pages(1)
    out = []
    for off, data, flags, measured in pages:
        if off in (TCS1, TCS2):
            data = replace(Tcs.unpack(data), flags=tcs_flags).pack()
        out.append((off, data, flags, measured))
    return out


def test_aexnotify_enclave_loads_and_runs() -> None:
    w = make_world()
    proc = w.proc()
    pages = _pages(arch.SGX_TCS_AEXNOTIFY)
    size = encl_size_for(pages[-1][0] + PAGE_SIZE)
    fd, base = create_enclave(proc, size, AEXN)
    add_pages(proc, fd, pages)  # the TCS with FLAGS = 0x2 is added (no EIO)
    sig = proc.alloc(sign(size, pages, AEXN).pack())
    proc.ioctl(fd, U.SGX_IOC_ENCLAVE_INIT, U.sgx_enclave_init(sigstruct=sig))
    heap = pages[-1][0]
    segments = [(TCS1, 2 * PAGE_SIZE, U.PROT_READ | U.PROT_WRITE)]
    segments += [(0x2000, 4 * PAGE_SIZE, U.PROT_READ | U.PROT_WRITE)]
    segments += [
        (0x6000, heap - 0x6000, U.PROT_READ | U.PROT_EXEC),
        (heap, PAGE_SIZE, U.PROT_READ | U.PROT_WRITE),
    ]
    encl = LoadedEnclave(proc, fd, base, size, base + heap, 1, segments, proc.alloc(PAGE_SIZE))
    encl.mmap_all()
    encl.put(0x1234_5678)
    assert encl.get() == 0x1234_5678
    w.teardown()


def test_reserved_tcs_flag_is_still_refused() -> None:
    w = make_world()
    proc = w.proc()
    pages = _pages(arch.SGX_TCS_AEXNOTIFY | 0x4)
    size = encl_size_for(pages[-1][0] + PAGE_SIZE)
    fd, _ = create_enclave(proc, size, AEXN)
    with pytest.raises(OSError) as exc:
        add_pages(proc, fd, pages)
    assert exc.value.errno == errno.EIO
    w.allowed_warns = w.kernel.log.warn_count
    w.teardown()

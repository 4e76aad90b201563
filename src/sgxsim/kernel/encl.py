"""Enclaves: ``struct sgx_encl``, its pages, VA pages and slots, the backing store, the page-fault
handler, the mmap permission rule, mm tracking, and teardown.

Per-page state (``struct sgx_encl_page``) is array-backed: :class:`EnclPages` is the enclave's
``page_array`` xarray, keyed by PFN like Linux's, stored as 512-entry chunks of numpy arrays
(``epc`` index or -1, the low 12 bits of ``desc`` (BEING_RECLAIMED / VA slot offset), VA page
id, ``vm_max_prot_bits``, ``type``), so sparse 128 TiB ELRANGEs and dense 512 GiB enclaves both
fit. The SECS is ``encl.secs_*`` (it is not in the page array, as in Linux). VA pages have ids;
their slot bitmaps are rows of a uint64 array and ``encl.va_pages`` is the ordered list Linux
keeps (first entry = where EWB takes slots).

Models: arch/x86/kernel/cpu/sgx/encl.c and encl.h (Linux 6.x mainline, commit 05f19412):
sgx_encl_page_alloc, sgx_encl_grow/shrink (ioctl.c), VA page and slot helpers, backing store
layout and PCMD truncation, __sgx_encl_eldu/sgx_encl_eldu (SECS first), __sgx_encl_load_page,
sgx_encl_eaug_page, sgx_vma_fault, sgx_vma_open, sgx_encl_may_map, sgx_vma_mprotect,
sgx_vma_access (EDBGRD/EDBGWR), sgx_encl_release, the mmu notifier, sgx_encl_mm_add,
sgx_encl_cpumask, sgx_encl_test_and_clear_young, sgx_zap_enclave_ptes.
Differs: memcg charging of backing pages is not modelled; ``sgx_encl_eaug_page`` reloads an
evicted SECS before EAUG (Linux would pass a NULL SECS to EAUG, a crash) — see there.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from sgxsim.hw.arch import PAGE_SHIFT, PAGE_SIZE, PageType, SecinfoFlags
from sgxsim.kernel import encls as E  # noqa: N812
from sgxsim.kernel.fs import ShmemFile
from sgxsim.kernel.locking import Kref, Mutex, SpinLock, Srcu, cond_resched
from sgxsim.kernel.mm import (
    VM_EXEC,
    VM_FAULT_NOPAGE,
    VM_FAULT_SIGBUS,
    VM_READ,
    VM_WRITE,
    Mm,
    Vma,
    VmFault,
)
from sgxsim.kernel.sgx import SGX_EPC_PAGE_RECLAIMER_TRACKED, EpcOwner
from sgxsim.kernel.uapi import EACCES, EBUSY, EFAULT, EIO, READ_IMPLIES_EXEC

if TYPE_CHECKING:
    from sgxsim.kernel.main import Kernel

__all__ = [
    "SECS_REF",
    "SGX_ENCL_CREATED",
    "SGX_ENCL_DEAD",
    "SGX_ENCL_DEBUG",
    "SGX_ENCL_INITIALIZED",
    "SGX_ENCL_IOCTL",
    "SGX_ENCL_PAGE_BEING_RECLAIMED",
    "SGX_ENCL_PAGE_VA_OFFSET_MASK",
    "SGX_VA_SLOT_COUNT",
    "SGX_VM_OPS",
    "EnclPages",
    "SgxBacking",
    "SgxEncl",
    "SgxEnclMm",
    "sgx_encl_may_map",
    "sgx_encl_release",
    "sgx_vma_fault",
    "validate_encl",
]

# enum sgx_encl_flags (encl.h)
SGX_ENCL_IOCTL = 1 << 0
SGX_ENCL_DEBUG = 1 << 1
SGX_ENCL_CREATED = 1 << 2
SGX_ENCL_INITIALIZED = 1 << 3
#: [MODEL] The enclave lost its EPC to an SVN update's zap (fixed default; the RFC as posted has
#: no such state): ioctls fail with -EIO, faults SIGBUS, entries fault.
SGX_ENCL_DEAD = 1 << 4

_ENCL_FLAG_NAMES = (
    (SGX_ENCL_IOCTL, "IOCTL"),
    (SGX_ENCL_DEBUG, "DEBUG"),
    (SGX_ENCL_CREATED, "CREATED"),
    (SGX_ENCL_INITIALIZED, "INITIALIZED"),
    (SGX_ENCL_DEAD, "DEAD"),
)

#: encl.h: desc bits 11:3 hold the VA slot offset while evicted; bit 3 flags reclaim in progress.
SGX_ENCL_PAGE_VA_OFFSET_MASK = 0xFF8
SGX_ENCL_PAGE_BEING_RECLAIMED = 1 << 3
SGX_VA_SLOT_COUNT = 512
PCMD_SIZE = 128
PCMDS_PER_PAGE = PAGE_SIZE // PCMD_SIZE
PCMD_FIRST_MASK = 0x1F
#: xas_for_each reschedule interval in sgx_encl_may_map (XA_CHECK_SCHED).
XA_CHECK_SCHED = 4096
#: The "page reference" meaning encl->secs in helpers that act on any sgx_encl_page.
SECS_REF = -1

_CHUNK_SHIFT = 9
_CHUNK = 1 << _CHUNK_SHIFT
_CMASK = _CHUNK - 1
_ALL_ONES = 0xFFFF_FFFF_FFFF_FFFF


# ---------------------------------------------------------------------------------------
# page_array


class _Chunk:
    __slots__ = ("_desc", "_epc", "_present", "_prot", "_type", "_va", "desc", "epc", "n", "present", "prot",
                 "type", "va")  # fmt: skip

    def __init__(self) -> None:
        self._present = np.zeros(_CHUNK, dtype=np.bool_)
        self._epc = np.full(_CHUNK, -1, dtype=np.int32)
        self._desc = np.zeros(_CHUNK, dtype=np.uint16)
        self._va = np.full(_CHUNK, -1, dtype=np.int32)
        self._prot = np.zeros(_CHUNK, dtype=np.uint8)
        self._type = np.zeros(_CHUNK, dtype=np.uint8)
        self.present = self._present.data
        self.epc = self._epc.data
        self.desc = self._desc.data
        self.va = self._va.data
        self.prot = self._prot.data
        self.type = self._type.data
        self.n = 0


class EnclPages:
    """The enclave's ``page_array`` and the ``struct sgx_encl_page`` records it points to.

    Keyed by absolute PFN (``desc >> PAGE_SHIFT``). Fields per present entry: ``epc`` (global
    EPC index, -1 when evicted), ``desc`` (the low 12 bits of ``desc``), ``va`` (VA page id of
    an evicted page, -1 otherwise), ``prot`` (``vm_max_prot_bits``), ``type``.
    """

    def __init__(self) -> None:
        self.chunks: dict[int, _Chunk] = {}
        self.count = 0

    def _get(self, pfn: int) -> _Chunk:
        return self.chunks[pfn >> _CHUNK_SHIFT]

    def load(self, pfn: int) -> bool:
        """``xa_load() != NULL``."""
        c = self.chunks.get(pfn >> _CHUNK_SHIFT)
        return c is not None and bool(c.present[pfn & _CMASK])

    def insert(self, pfn: int, prot: int) -> bool:
        """``xa_insert``: a fresh entry (epc -1, desc 0, type 0). False (-EBUSY) if present."""
        key = pfn >> _CHUNK_SHIFT
        c = self.chunks.get(key)
        if c is None:
            c = _Chunk()
            self.chunks[key] = c
        i = pfn & _CMASK
        if c.present[i]:
            return False
        c.present[i] = True
        c.epc[i] = -1
        c.desc[i] = 0
        c.va[i] = -1
        c.prot[i] = prot
        c.type[i] = 0
        c.n += 1
        self.count += 1
        return True

    def erase(self, pfn: int) -> None:
        """``xa_erase`` (and the kfree of the record)."""
        key = pfn >> _CHUNK_SHIFT
        c = self.chunks.get(key)
        if c is None or not c.present[pfn & _CMASK]:
            return
        c.present[pfn & _CMASK] = False
        c.n -= 1
        self.count -= 1
        if c.n == 0:
            del self.chunks[key]

    def clear(self) -> None:
        """``xa_destroy``."""
        self.chunks.clear()
        self.count = 0

    def epc(self, pfn: int) -> int:
        return int(self._get(pfn).epc[pfn & _CMASK])

    def set_epc(self, pfn: int, page: int) -> None:
        self._get(pfn).epc[pfn & _CMASK] = page

    def desc(self, pfn: int) -> int:
        return int(self._get(pfn).desc[pfn & _CMASK])

    def set_desc(self, pfn: int, low: int) -> None:
        self._get(pfn).desc[pfn & _CMASK] = low

    def va(self, pfn: int) -> int:
        return int(self._get(pfn).va[pfn & _CMASK])

    def set_va(self, pfn: int, va: int) -> None:
        self._get(pfn).va[pfn & _CMASK] = va

    def prot(self, pfn: int) -> int:
        return int(self._get(pfn).prot[pfn & _CMASK])

    def set_prot(self, pfn: int, prot: int) -> None:
        self._get(pfn).prot[pfn & _CMASK] = prot

    def type(self, pfn: int) -> int:
        return int(self._get(pfn).type[pfn & _CMASK])

    def set_type(self, pfn: int, t: int) -> None:
        self._get(pfn).type[pfn & _CMASK] = t

    def set_being_reclaimed(self, pfn: int, on: bool) -> None:
        c = self._get(pfn)
        i = pfn & _CMASK
        d = c.desc[i]
        c.desc[i] = (d | SGX_ENCL_PAGE_BEING_RECLAIMED) if on else (d & ~SGX_ENCL_PAGE_BEING_RECLAIMED)

    def pfns(self, lo: int | None = None, hi: int | None = None) -> list[int]:
        """Present PFNs in ascending order, optionally within [lo, hi] (inclusive, like xas)."""
        out: list[int] = []
        for key in sorted(self.chunks):
            base = key << _CHUNK_SHIFT
            if hi is not None and base > hi:
                break
            if lo is not None and base + _CHUNK <= lo:
                continue
            idx = np.flatnonzero(self.chunks[key]._present) + base
            if lo is not None:
                idx = idx[idx >= lo]
            if hi is not None:
                idx = idx[idx <= hi]
            out.extend(idx.tolist())
        return out

    def present_groups(self, lo: int, hi: int, n: int) -> Iterator[npt.NDArray[np.int64]]:
        """Present PFNs in [lo, hi] in ascending order, ``n`` per group. The array is read one
        chunk at a time as the walk advances, so a caller that drops its lock between groups
        goes on from where it stopped over the array as it is then (``xas_pause``)."""
        k0, k1 = lo >> _CHUNK_SHIFT, hi >> _CHUNK_SHIFT
        pending: list[npt.NDArray[np.int64]] = []
        have = 0
        for key in sorted(k for k in self.chunks if k0 <= k <= k1):
            c = self.chunks.get(key)
            if c is None:
                continue
            base = key << _CHUNK_SHIFT
            idx = np.flatnonzero(c._present).astype(np.int64) + base
            if base < lo or base + _CHUNK - 1 > hi:
                idx = idx[(idx >= lo) & (idx <= hi)]
            pending.append(idx)
            have += len(idx)
            while have >= n:
                run = np.concatenate(pending)
                yield run[:n]
                pending, have = [run[n:]], have - n
        if have:
            yield np.concatenate(pending)

    def prot_many(self, pfns: npt.NDArray[np.int64]) -> npt.NDArray[np.int16]:
        """``vm_max_prot_bits`` of each PFN of an ascending array; -1 where none is present now."""
        out = np.full(len(pfns), -1, dtype=np.int16)
        if len(pfns) == 0:
            return out
        keys = pfns >> _CHUNK_SHIFT
        bounds = [0, *(np.flatnonzero(keys[1:] != keys[:-1]) + 1).tolist(), len(pfns)]
        for a, b in itertools.pairwise(bounds):
            c = self.chunks.get(int(keys[a]))
            if c is None:
                continue
            i = pfns[a:b] & _CMASK
            out[a:b] = np.where(c._present[i], c._prot[i].astype(np.int16), np.int16(-1))
        return out

    def any_present(self, pfn: int, n: int) -> bool:
        end = pfn + n
        for key in range(pfn >> _CHUNK_SHIFT, ((end - 1) >> _CHUNK_SHIFT) + 1):
            c = self.chunks.get(key)
            if c is None:
                continue
            lo = max(pfn, key << _CHUNK_SHIFT) - (key << _CHUNK_SHIFT)
            hi = min(end, (key + 1) << _CHUNK_SHIFT) - (key << _CHUNK_SHIFT)
            if c._present[lo:hi].any():
                return True
        return False

    def _runs(self, pfn: int, n: int) -> Iterator[tuple[_Chunk, int, int, int]]:
        """(chunk, lo, hi, offset into the run) slices covering [pfn, pfn + n), creating chunks."""
        end = pfn + n
        pos = pfn
        while pos < end:
            key = pos >> _CHUNK_SHIFT
            c = self.chunks.get(key)
            if c is None:
                c = _Chunk()
                self.chunks[key] = c
            lo = pos & _CMASK
            hi = min(_CHUNK, lo + (end - pos))
            yield c, lo, hi, pos - pfn
            pos += hi - lo

    def insert_run(self, pfn: int, n: int, prot: int) -> None:
        """Insert ``n`` fresh entries (none may be present) — a batch of :meth:`insert`."""
        for c, lo, hi, _ in self._runs(pfn, n):
            c._present[lo:hi] = True
            c._epc[lo:hi] = -1
            c._desc[lo:hi] = 0
            c._va[lo:hi] = -1
            c._prot[lo:hi] = prot
            c._type[lo:hi] = 0
            c.n += hi - lo
        self.count += n

    def set_run(self, pfn: int, epcs: npt.NDArray[np.int64], typ: int) -> None:
        for c, lo, hi, off in self._runs(pfn, len(epcs)):
            c._epc[lo:hi] = epcs[off : off + hi - lo]
            c._type[lo:hi] = typ

    def all_prot(self, lo: int, hi: int, bits: int) -> bool:
        """Whether every present entry with PFN in [lo, hi] allows all of ``bits`` (vectorized
        per chunk; the same answer as testing each entry of :meth:`pfns`)."""
        k0, k1 = lo >> _CHUNK_SHIFT, hi >> _CHUNK_SHIFT
        keys = range(k0, k1 + 1) if k1 - k0 < len(self.chunks) else (k for k in self.chunks if k0 <= k <= k1)
        for key in keys:
            c = self.chunks.get(key)
            if c is None:
                continue
            base = key << _CHUNK_SHIFT
            a = max(lo - base, 0)
            b = min(hi - base, _CHUNK - 1) + 1
            present = c._present[a:b]
            if np.any((~c._prot[a:b][present]) & bits):
                return False
        return True

    def forget_epc_many(self, pfns: npt.NDArray[np.int64], pages: npt.NDArray[np.int64]) -> int:
        """Set ``epc = -1`` for each present entry ``pfns[i]`` whose EPC page is ``pages[i]``
        (vectorized per chunk). Returns how many entries changed."""
        if len(pfns) == 0:
            return 0
        order = np.argsort(pfns, kind="stable")
        pfns = pfns[order]
        pages = pages[order]
        keys = pfns >> _CHUNK_SHIFT
        bounds = np.flatnonzero(np.diff(keys)) + 1
        changed = 0
        for lo, hi in zip(np.r_[0, bounds].tolist(), np.r_[bounds, len(keys)].tolist(), strict=True):
            c = self.chunks.get(int(keys[lo]))
            if c is None:
                continue
            idx = pfns[lo:hi] & _CMASK
            hit = c._present[idx] & (c._epc[idx] == pages[lo:hi])
            c._epc[idx[hit]] = -1
            changed += int(np.count_nonzero(hit))
        return changed


# ---------------------------------------------------------------------------------------
# The enclave


@dataclass
class SgxBacking:
    """``struct sgx_backing``: the pinned backing pages of one enclave page (DRAM addresses)."""

    page_index: int
    contents: int
    pcmd: int
    pcmd_offset: int


class SgxEncl:
    """``struct sgx_encl`` (created by opening /dev/sgx_enclave)."""

    def __init__(self, k: Kernel) -> None:
        self.k = k
        self.id = k.new_encl_id()
        self.base = 0
        self.size = 0
        self.flags = 0
        self.page_cnt = 0
        self.secs_child_cnt = 0
        self.lock = Mutex(k.sched, "encl")
        self.pages = EnclPages()
        #: encl->secs: its EPC page (-1 when evicted), the low bits of its desc, its VA page.
        self.secs_epc = -1
        self.secs_desc = 0
        self.secs_va = -1
        self.attributes = 0
        self.attributes_mask = 0
        self.cpumask: set[int] = set()
        self.backing: ShmemFile | None = None
        self.refcount = Kref(self)
        #: encl->va_pages in list order (keys are VA page ids).
        self.va_pages: collections.OrderedDict[int, None] = collections.OrderedDict()
        self.va_epc: list[int] = []
        self.va_slots = np.zeros((0, SGX_VA_SLOT_COUNT // 64), dtype=np.uint64)
        self.va_nused: list[int] = []
        self._va_free: list[int] = []
        #: encl->mm_list (RCU list; new entries at the head).
        self.mm_list: list[SgxEnclMm] = []
        self.mm_list_version = 0
        self.mm_lock = SpinLock(k.sched, "encl_mm_lock")
        self.srcu = Srcu(k.sched, "encl_srcu")
        self.released = False
        k.enclaves[self.id] = self

    def __repr__(self) -> str:
        names = [n for bit, n in _ENCL_FLAG_NAMES if self.flags & bit] or ["-"]
        secs = "evicted" if self.secs_epc < 0 else f"{self.secs_epc}"
        return (
            f"<SgxEncl id={self.id} base={self.base:#x} size={self.size:#x} flags={'|'.join(names)} "
            f"pages={self.pages.count} resident={self.secs_child_cnt} secs={secs} va={len(self.va_pages)}>"
        )

    @property
    def base_pfn(self) -> int:
        return self.base >> PAGE_SHIFT


# -- page references (a page-array PFN or SECS_REF) -------------------------------------


def _ref_epc(encl: SgxEncl, ref: int) -> int:
    return encl.secs_epc if ref == SECS_REF else encl.pages.epc(ref)


def _ref_set_epc(encl: SgxEncl, ref: int, page: int) -> None:
    if ref == SECS_REF:
        encl.secs_epc = page
    else:
        encl.pages.set_epc(ref, page)


def _ref_desc(encl: SgxEncl, ref: int) -> int:
    """The low 12 bits of desc."""
    return encl.secs_desc if ref == SECS_REF else encl.pages.desc(ref)


def _ref_set_desc(encl: SgxEncl, ref: int, low: int) -> None:
    if ref == SECS_REF:
        encl.secs_desc = low
    else:
        encl.pages.set_desc(ref, low)


def _ref_va(encl: SgxEncl, ref: int) -> int:
    return encl.secs_va if ref == SECS_REF else encl.pages.va(ref)


def _ref_set_va(encl: SgxEncl, ref: int, va: int) -> None:
    if ref == SECS_REF:
        encl.secs_va = va
    else:
        encl.pages.set_va(ref, va)


def _ref_addr(encl: SgxEncl, ref: int) -> int:
    """``desc & PAGE_MASK``: the page's address (0 for the SECS, whose desc is never set)."""
    return 0 if ref == SECS_REF else ref << PAGE_SHIFT


# -- kernel-stack structures --------------------------------------------------------------


def write_pageinfo(k: Kernel, linaddr: int, srcpge: int, metadata: int, secs: int) -> int:
    """Build ``struct sgx_pageinfo`` on the current task's kernel stack; its address."""
    page = k.scratch_page()
    k.machine.dram.write(page, b"".join(v.to_bytes(8, "little") for v in (linaddr, srcpge, metadata, secs)))
    return page


def write_secinfo(k: Kernel, raw: bytes) -> int:
    """Place a 64-byte ``struct sgx_secinfo`` on the kernel stack (64-byte aligned); its address."""
    addr = k.scratch_page() + 64
    k.machine.dram.write(addr, raw)
    return addr


def secinfo_bytes(flags: int) -> bytes:
    return flags.to_bytes(8, "little") + bytes(56)


# -- allocation of records, VA pages and slots --------------------------------------------------


def sgx_encl_page_alloc(encl: SgxEncl, offset: int, secinfo_flags: int) -> int:
    """The ``vm_max_prot_bits`` a new page gets: SECINFO R/W/X, plus R|W for TCS.

    Models: encl.c sgx_encl_page_alloc() (the record itself is created by xa_insert here).
    """
    prot = secinfo_flags & (SecinfoFlags.R | SecinfoFlags.W | SecinfoFlags.X)
    if (secinfo_flags & 0xFF00) == int(PageType.PT_TCS) << 8:
        prot |= VM_READ | VM_WRITE
    return int(prot)


def _va_new_id(encl: SgxEncl) -> int:
    if encl._va_free:
        va = encl._va_free.pop()
        encl.va_slots[va] = 0
        encl.va_nused[va] = 0
        encl.va_epc[va] = -1
        return va
    va = len(encl.va_epc)
    encl.va_epc.append(-1)
    encl.va_nused.append(0)
    if va >= len(encl.va_slots):
        grown = np.zeros((max(4, 2 * len(encl.va_slots)), SGX_VA_SLOT_COUNT // 64), dtype=np.uint64)
        grown[: len(encl.va_slots)] = encl.va_slots
        encl.va_slots = grown
    return va


def _va_release_id(encl: SgxEncl, va: int) -> None:
    encl.va_epc[va] = -1
    encl.va_nused[va] = 0
    encl.va_slots[va] = 0
    encl._va_free.append(va)


def sgx_alloc_va_page(encl: SgxEncl, va: int, reclaim: bool) -> int:
    """Allocate an EPC page and EPA it into a VA page.

    Models: encl.c sgx_alloc_va_page(). Outcomes: the EPC page; an allocation errno; -EFAULT
    when EPA fails (WARN_ONCE, page freed).
    """
    k = encl.k
    page = k.sgx_alloc_epc_page(EpcOwner.VA_PAGE, encl.id, va, reclaim)
    if page < 0:
        return page
    ret = E.epa(k, page)
    if ret:
        k.log.WARN_ONCE("EPA", True, "EPA returned %d (0x%x)", ret, ret, site="sgx_alloc_va_page")
        k.sgx_encl_free_epc_page(page)
        return -EFAULT
    return page


def sgx_encl_grow(encl: SgxEncl, reclaim: bool) -> int | None:
    """Count one more enclave page; allocate a VA page when the count crosses a multiple of 512.

    Models: ioctl.c sgx_encl_grow(). Outcomes: a new VA page id (the caller puts it on
    ``encl.va_pages`` under encl->lock), None (existing VA pages have room), or -errno.
    """
    va: int | None = None
    if encl.page_cnt % SGX_VA_SLOT_COUNT == 0:
        va = _va_new_id(encl)
        page = sgx_alloc_va_page(encl, va, reclaim)
        if page < 0:
            _va_release_id(encl, va)
            return page
        encl.va_epc[va] = page
        encl.k.log.WARN_ON_ONCE("sgx_encl_grow", encl.page_cnt % SGX_VA_SLOT_COUNT, site="sgx_encl_grow")
    encl.page_cnt += 1
    return va


def sgx_encl_grow_with(encl: SgxEncl, page: int) -> int | None:
    """:func:`sgx_encl_grow` when the caller already allocated the EPC page it may need (batch
    path). Returns the new VA page id (``page`` EPA'd and owned by it), None (``page`` unused),
    or -EFAULT (EPA failed; ``page`` freed)."""
    va: int | None = None
    if encl.page_cnt % SGX_VA_SLOT_COUNT == 0:
        k = encl.k
        va = _va_new_id(encl)
        k._set_owner(page, EpcOwner.VA_PAGE, encl.id, va)
        ret = E.epa(k, page)
        if ret:
            k.log.WARN_ONCE("EPA", True, "EPA returned %d (0x%x)", ret, ret, site="sgx_alloc_va_page")
            k.sgx_encl_free_epc_page(page)
            _va_release_id(encl, va)
            return -EFAULT
        encl.va_epc[va] = page
    encl.page_cnt += 1
    return va


def va_list_add(encl: SgxEncl, va: int) -> None:
    """``list_add(&va_page->list, &encl->va_pages)`` (at the head)."""
    encl.va_pages[va] = None
    encl.va_pages.move_to_end(va, last=False)


def sgx_encl_shrink(encl: SgxEncl, va: int | None) -> None:
    """Undo one grow; free the VA page it allocated, if any. Models: ioctl.c sgx_encl_shrink()."""
    encl.page_cnt -= 1
    if va is not None:
        encl.k.sgx_encl_free_epc_page(encl.va_epc[va])
        encl.va_pages.pop(va, None)
        _va_release_id(encl, va)


def sgx_alloc_va_slot(encl: SgxEncl, va: int) -> int:
    """Take the first free slot of a VA page; its byte offset (4096 if the page is full).

    Models: encl.c sgx_alloc_va_slot().
    """
    row = encl.va_slots[va]
    for w in range(SGX_VA_SLOT_COUNT // 64):
        word = int(row[w])
        if word != _ALL_ONES:
            bit = (~word & (word + 1)).bit_length() - 1
            row[w] = word | (1 << bit)
            encl.va_nused[va] += 1
            return (w * 64 + bit) << 3
    return SGX_VA_SLOT_COUNT << 3


def sgx_free_va_slot(encl: SgxEncl, va: int, offset: int) -> None:
    """Models: encl.c sgx_free_va_slot()."""
    slot = offset >> 3
    row = encl.va_slots[va]
    word = int(row[slot >> 6])
    if word >> (slot & 63) & 1:
        row[slot >> 6] = word & ~(1 << (slot & 63))
        encl.va_nused[va] -= 1


def sgx_va_page_full(encl: SgxEncl, va: int) -> bool:
    """Models: encl.c sgx_va_page_full()."""
    return encl.va_nused[va] == SGX_VA_SLOT_COUNT


def va_slot_used(encl: SgxEncl, va: int, offset: int) -> bool:
    slot = offset >> 3
    return bool(int(encl.va_slots[va][slot >> 6]) >> (slot & 63) & 1)


# -- backing store ---------------------------------------------------------------------------


def sgx_encl_get_backing_page_pcmd_offset(encl: SgxEncl, page_index: int) -> int:
    """Byte offset of a page's PCMD in the backing file: after the pages and the SECS.

    Models: encl.c sgx_encl_get_backing_page_pcmd_offset().
    """
    return encl.size + PAGE_SIZE + page_index * PCMD_SIZE


def sgx_encl_get_backing(encl: SgxEncl, page_index: int) -> SgxBacking | None:
    """Pin (allocating if needed) the contents and PCMD pages of ``page_index``.

    Models: encl.c sgx_encl_get_backing(). Outcome: the backing, or None (no backing file).
    """
    if encl.backing is None:
        return None
    off = sgx_encl_get_backing_page_pcmd_offset(encl, page_index)
    contents = encl.backing.get_page(page_index)
    pcmd = encl.backing.get_page(off >> PAGE_SHIFT)
    return SgxBacking(page_index, contents, pcmd, off & (PAGE_SIZE - 1))


def sgx_encl_alloc_backing(encl: SgxEncl, page_index: int) -> SgxBacking | None:
    """Models: encl.c sgx_encl_alloc_backing() (Differs: no memcg charging)."""
    return sgx_encl_get_backing(encl, page_index)


def sgx_encl_lookup_backing(encl: SgxEncl, page_index: int) -> SgxBacking | None:
    """Models: encl.c sgx_encl_lookup_backing()."""
    return sgx_encl_get_backing(encl, page_index)


def sgx_encl_truncate_backing_page(encl: SgxEncl, page_index: int) -> None:
    """Models: encl.c sgx_encl_truncate_backing_page() (shmem_truncate_range of one page)."""
    if encl.backing is not None:
        encl.backing.truncate_page(page_index)


def reclaimer_writing_to_pcmd(encl: SgxEncl, start_addr: int) -> bool:
    """Whether a page sharing the PCMD page at ``start_addr`` is being reclaimed.

    Models: encl.c reclaimer_writing_to_pcmd().
    """
    for i in range(PCMDS_PER_PAGE):
        addr = start_addr + i * PAGE_SIZE
        if addr == encl.base + encl.size:
            break
        pfn = addr >> PAGE_SHIFT
        if not encl.pages.load(pfn):
            continue
        if encl.pages.epc(pfn) >= 0 and encl.pages.desc(pfn) & SGX_ENCL_PAGE_BEING_RECLAIMED:
            return True
    return False


# -- ELDU and loading ------------------------------------------------------------------------


def _sgx_encl_eldu(encl: SgxEncl, ref: int, epc_page: int, secs_page: int) -> int:
    """ELDU a page (or the SECS, ``secs_page`` = -1) from the backing store into ``epc_page``.

    Models: encl.c __sgx_encl_eldu(): ELDU with the PCMD; then always zero the PCMD, truncate
    the contents page, and truncate the PCMD page if it is now all zero and no sibling is being
    reclaimed. Outcomes: 0; -EFAULT (ELDU failed; WARN unless an EPCM #PF).
    """
    k = encl.k
    desc = _ref_desc(encl, ref)
    va_offset = desc & SGX_ENCL_PAGE_VA_OFFSET_MASK
    if secs_page >= 0:
        page_index = (_ref_addr(encl, ref) - encl.base) >> PAGE_SHIFT
    else:
        page_index = encl.size >> PAGE_SHIFT
    pcmd_first_page = ((page_index & ~PCMD_FIRST_MASK) << PAGE_SHIFT) + encl.base
    page_pcmd_off = sgx_encl_get_backing_page_pcmd_offset(encl, page_index)
    b = sgx_encl_lookup_backing(encl, page_index)
    if b is None:
        return -EFAULT
    pginfo = write_pageinfo(
        k,
        _ref_addr(encl, ref),
        b.contents,
        b.pcmd + b.pcmd_offset,
        k.phys(secs_page) if secs_page >= 0 else 0,
    )
    va = _ref_va(encl, ref)
    ret = E.eldu(k, pginfo, epc_page, encl.va_epc[va], va_offset)
    if ret:
        if E.encls_failed(ret):
            E.ENCLS_WARN(k, ret, "ELDU")
        ret = -EFAULT
    dram = k.machine.dram
    dram.write(b.pcmd + b.pcmd_offset, bytes(PCMD_SIZE))
    pcmd_page_empty = dram.page_is_zero(b.pcmd)
    sgx_encl_truncate_backing_page(encl, page_index)
    if pcmd_page_empty and not reclaimer_writing_to_pcmd(encl, pcmd_first_page):
        sgx_encl_truncate_backing_page(encl, page_pcmd_off >> PAGE_SHIFT)
    return ret


def sgx_encl_eldu(encl: SgxEncl, ref: int, secs_page: int) -> int:
    """Allocate an EPC page (no reclaim) and ELDU ``ref`` into it.

    Models: encl.c sgx_encl_eldu(). Outcomes: the EPC page; -EBUSY / -ENOMEM from the
    allocator; -EFAULT (ELDU failed, page freed). On success the VA slot is freed, its VA page
    moves to the head of ``va_pages``, and the VA offset bits are cleared.
    """
    k = encl.k
    va_offset = _ref_desc(encl, ref) & SGX_ENCL_PAGE_VA_OFFSET_MASK
    if ref == SECS_REF:
        page = k.sgx_alloc_epc_page(EpcOwner.SECS, encl.id, 0, False)
    else:
        page = k.sgx_alloc_epc_page(EpcOwner.ENCL_PAGE, encl.id, ref, False)
    if page < 0:
        return page
    ret = _sgx_encl_eldu(encl, ref, page, secs_page)
    if ret:
        k.sgx_encl_free_epc_page(page)
        return ret
    va = _ref_va(encl, ref)
    sgx_free_va_slot(encl, va, va_offset)
    encl.va_pages.move_to_end(va, last=False)
    _ref_set_desc(encl, ref, _ref_desc(encl, ref) & ~SGX_ENCL_PAGE_VA_OFFSET_MASK)
    _ref_set_va(encl, ref, -1)
    _ref_set_epc(encl, ref, page)
    k.count("eldu")
    return page


def _sgx_encl_load_page(encl: SgxEncl, pfn: int) -> int:
    """Make a page-array entry resident: ELDU the SECS first if it was evicted, then the page.

    Models: encl.c __sgx_encl_load_page(). Outcomes: 0; -EBUSY (being reclaimed); an
    ELDU/allocation errno.
    """
    k = encl.k
    pages = encl.pages
    if pages.epc(pfn) >= 0:
        if pages.desc(pfn) & SGX_ENCL_PAGE_BEING_RECLAIMED:
            return -EBUSY
        return 0
    if encl.secs_epc < 0:
        r = sgx_encl_eldu(encl, SECS_REF, -1)
        if r < 0:
            return r
    r = sgx_encl_eldu(encl, pfn, encl.secs_epc)
    if r < 0:
        return r
    encl.secs_child_cnt += 1
    k.sgx_mark_page_reclaimable(pages.epc(pfn))
    return 0


def sgx_encl_load_page_in_vma(encl: SgxEncl, addr: int, vm_flags: int) -> int:
    """Models: encl.c sgx_encl_load_page_in_vma(): no entry or VMA wider than the page's max
    permissions -> -EFAULT; else __sgx_encl_load_page."""
    pfn = addr >> PAGE_SHIFT
    vm_prot_bits = vm_flags & (VM_READ | VM_WRITE | VM_EXEC)
    if not encl.pages.load(pfn):
        return -EFAULT
    if (encl.pages.prot(pfn) & vm_prot_bits) != vm_prot_bits:
        return -EFAULT
    return _sgx_encl_load_page(encl, pfn)


def sgx_encl_load_page(encl: SgxEncl, addr: int) -> int:
    """Models: encl.c sgx_encl_load_page(). Outcomes: 0, -EFAULT (no entry), load errors."""
    pfn = addr >> PAGE_SHIFT
    if not encl.pages.load(pfn):
        return -EFAULT
    return _sgx_encl_load_page(encl, pfn)


# -- the fault handler -----------------------------------------------------------------------


def sgx_encl_eaug_page(vma: Vma, encl: SgxEncl, addr: int) -> int:
    """Add a page to an initialized enclave on a fault in an ELRANGE hole (SGX2).

    Models: encl.c sgx_encl_eaug_page(). Outcomes: VM_FAULT_NOPAGE (PTE installed, or -EBUSY
    from the allocator: retry), VM_FAULT_SIGBUS (not initialized, allocation/EAUG failure,
    entry created concurrently), VM_FAULT_OOM.
    Differs: if the SECS was evicted (all children reclaimed), it is reloaded first; Linux
    passes ``sgx_get_epc_virt_addr(NULL)`` to EAUG in that case.
    """
    k = encl.k
    if not encl.flags & SGX_ENCL_INITIALIZED:
        return VM_FAULT_SIGBUS
    prot = sgx_encl_page_alloc(encl, addr - encl.base, int(SecinfoFlags.R | SecinfoFlags.W | SecinfoFlags.X))
    pfn = addr >> PAGE_SHIFT
    encl.lock.lock()
    try:
        if encl.secs_epc < 0:
            r = sgx_encl_eldu(encl, SECS_REF, -1)
            if r < 0:
                return VM_FAULT_NOPAGE if r == -EBUSY else VM_FAULT_SIGBUS
        page = k.sgx_alloc_epc_page(EpcOwner.ENCL_PAGE, encl.id, pfn, False)
        if page < 0:
            return VM_FAULT_NOPAGE if page == -EBUSY else VM_FAULT_SIGBUS
        va = sgx_encl_grow(encl, False)
        if va is not None and va < 0:
            k.sgx_encl_free_epc_page(page)
            return VM_FAULT_SIGBUS
        if va is not None:
            va_list_add(encl, va)
        if not encl.pages.insert(pfn, prot):
            sgx_encl_shrink(encl, va)
            k.sgx_encl_free_epc_page(page)
            return VM_FAULT_SIGBUS
        pginfo = write_pageinfo(k, addr & ~(PAGE_SIZE - 1), 0, 0, k.phys(encl.secs_epc))
        ret = E.eaug(k, pginfo, page)
        if ret:
            encl.pages.erase(pfn)
            sgx_encl_shrink(encl, va)
            k.sgx_encl_free_epc_page(page)
            return VM_FAULT_SIGBUS
        encl.pages.set_epc(pfn, page)
        encl.pages.set_type(pfn, int(PageType.PT_REG))
        encl.secs_child_cnt += 1
        k.sgx_mark_page_reclaimable(page)
        k.count("eaug")
        vmret = vma.vm_mm.vmf_insert_pfn(vma, addr, k.phys(page) >> PAGE_SHIFT)
        if vmret != VM_FAULT_NOPAGE:
            return VM_FAULT_SIGBUS
        return VM_FAULT_NOPAGE
    finally:
        encl.lock.unlock()


def sgx_vma_fault(vmf: VmFault) -> int:
    """The ``.fault`` of enclave VMAs.

    Models: encl.c sgx_vma_fault(): SGX2 and no entry -> EAUG; else load the page (ELDU,
    SECS first) under encl->lock, insert the PFN, clear the Accessed bit.
    Outcomes: VM_FAULT_NOPAGE (mapped, or -EBUSY: retry), VM_FAULT_SIGBUS, VM_FAULT_OOM.
    """
    vma = vmf.vma
    addr = vmf.address
    encl = vma.vm_private_data
    if not isinstance(encl, SgxEncl):
        return VM_FAULT_SIGBUS
    k = encl.k
    # RFC v2 patch 01: no page may be initialized while an SVN update holds the EPC.
    idx = k.sgx_epc_read_lock()
    try:
        if k.sgx_epc_is_locked():
            k.count("faults_sigbus_epc_locked")
            return VM_FAULT_SIGBUS
        if encl.flags & SGX_ENCL_DEAD:
            return VM_FAULT_SIGBUS
        return _sgx_vma_fault(vma, encl, addr)
    finally:
        k.sgx_epc_read_unlock(idx)


def _sgx_vma_fault(vma: Vma, encl: SgxEncl, addr: int) -> int:
    k = encl.k
    pfn = addr >> PAGE_SHIFT
    if k.sgx2 and not encl.pages.load(pfn):
        return sgx_encl_eaug_page(vma, encl, addr)
    encl.lock.lock()
    ret = sgx_encl_load_page_in_vma(encl, addr, vma.vm_flags)
    if ret < 0:
        encl.lock.unlock()
        if ret == -EBUSY:
            return VM_FAULT_NOPAGE
        return VM_FAULT_SIGBUS
    mm = vma.vm_mm
    vmret = mm.vmf_insert_pfn(vma, addr, k.phys(encl.pages.epc(pfn)) >> PAGE_SHIFT)
    if vmret != VM_FAULT_NOPAGE:
        encl.lock.unlock()
        return VM_FAULT_SIGBUS
    sgx_encl_test_and_clear_young(mm, encl, pfn)
    encl.lock.unlock()
    return VM_FAULT_NOPAGE


def sgx_vma_open(vma: Vma) -> None:
    """Models: encl.c sgx_vma_open() (a split or copied VMA joins the enclave's mm_list)."""
    encl = vma.vm_private_data
    if not isinstance(encl, SgxEncl):
        return
    if sgx_encl_mm_add(encl, vma.vm_mm):
        vma.vm_private_data = None


def sgx_encl_may_map(encl: SgxEncl, start: int, end: int, vm_flags: int) -> int:
    """Whether [start, end) may be mapped (or mprotected) with ``vm_flags``.

    Models: encl.c sgx_encl_may_map(): an initialized enclave may not be mapped outside
    ELRANGE; READ_IMPLIES_EXEC tasks are refused; every *existing* page in the range must allow
    the requested R/W/X (holes are not checked — EAUG targets).
    Outcomes: 0 or -EACCES.
    """
    k = encl.k
    vm_prot_bits = vm_flags & (VM_READ | VM_WRITE | VM_EXEC)
    if encl.flags & SGX_ENCL_INITIALIZED and (start < encl.base or end > encl.base + encl.size):
        return -EACCES
    proc = k.current_proc
    if proc is not None and proc.mm.personality & READ_IMPLIES_EXEC:
        return -EACCES
    ret = 0
    encl.lock.lock()
    if k.batch_ok():
        # Single task: nothing can change the page array while we look; check it per chunk.
        ok = encl.pages.all_prot(start >> PAGE_SHIFT, (end - 1) >> PAGE_SHIFT, vm_prot_bits)
        encl.lock.unlock()
        return 0 if ok else -EACCES
    # XA_CHECK_SCHED entries at a time under the lock (one vectorized test each), then the
    # lock is dropped for a preemption point, as Linux's xas_pause() + cond_resched().
    for group in encl.pages.present_groups(start >> PAGE_SHIFT, (end - 1) >> PAGE_SHIFT, XA_CHECK_SCHED):
        prot = encl.pages.prot_many(group)
        if np.any(~prot[prot >= 0] & vm_prot_bits):
            ret = -EACCES
            break
        if len(group) == XA_CHECK_SCHED:
            encl.lock.unlock()
            cond_resched(k.sched)
            encl.lock.lock()
    encl.lock.unlock()
    return ret


def sgx_vma_mprotect(vma: Vma, start: int, end: int, newflags: int) -> int:
    """Models: encl.c sgx_vma_mprotect() = sgx_encl_may_map with the new flags."""
    encl = vma.vm_private_data
    if not isinstance(encl, SgxEncl):
        return -EACCES
    return sgx_encl_may_map(encl, start, end, newflags)


def sgx_encl_reserve_page(encl: SgxEncl, addr: int, vm_flags: int) -> int:
    """Load a page and take encl->lock (retrying while it is being reclaimed).

    Models: encl.c sgx_encl_reserve_page(). Outcomes: 0 (lock held), or -errno (lock not held).
    """
    k = encl.k
    for _ in range(1_000_000):
        encl.lock.lock()
        ret = sgx_encl_load_page_in_vma(encl, addr, vm_flags)
        if ret != -EBUSY:
            break
        encl.lock.unlock()
        k.run_deferred_work()
    else:
        raise RuntimeError("sgx_encl_reserve_page: page never stopped being reclaimed")
    if ret < 0:
        encl.lock.unlock()
    return ret


def sgx_vma_access(vma: Vma, addr: int, buf: bytearray, write: bool) -> int:
    """ptrace access to a debug enclave, 8 bytes at a time with EDBGRD/EDBGWR.

    Models: encl.c sgx_vma_access(). Outcomes: bytes transferred; -EFAULT (not a debug
    enclave, no such page); -EIO (EDBGRD/EDBGWR failed).
    """
    encl = vma.vm_private_data
    if not isinstance(encl, SgxEncl):
        return -EFAULT
    if not encl.flags & SGX_ENCL_DEBUG:
        return -EFAULT
    k = encl.k
    idx = k.sgx_epc_read_lock()
    try:
        if k.sgx_epc_is_locked():
            if k.svn.as_posted:
                # As posted: the -EBUSY exit unlocks encl->lock, which was never taken.
                k.log.WARN(True, "bad unlock balance detected: encl->lock", site="sgx_vma_access")
            return -EBUSY
        if encl.flags & SGX_ENCL_DEAD:
            return -EIO
        return _sgx_vma_access(encl, addr, buf, write, vma.vm_flags)
    finally:
        k.sgx_epc_read_unlock(idx)


def _sgx_vma_access(encl: SgxEncl, addr: int, buf: bytearray, write: bool, vm_flags: int) -> int:
    k = encl.k
    length = len(buf)
    i = 0
    ret = 0
    while i < length:
        r = sgx_encl_reserve_page(encl, (addr + i) & ~(PAGE_SIZE - 1), vm_flags)
        if r < 0:
            ret = r
            break
        align = (addr + i) & ~7
        offset = (addr + i) & 7
        cnt = min(8 - offset, length - i)
        page = encl.pages.epc((addr + i) >> PAGE_SHIFT)
        rr, value = E.edbgrd(k, page, align & (PAGE_SIZE - 1))
        if rr:
            ret = -EIO
        else:
            data = bytearray(value.to_bytes(8, "little"))
            if write:
                data[offset : offset + cnt] = buf[i : i + cnt]
                if E.edbgwr(k, page, align & (PAGE_SIZE - 1), int.from_bytes(data, "little")):
                    ret = -EIO
            else:
                buf[i : i + cnt] = data[offset : offset + cnt]
        encl.lock.unlock()
        if ret:
            break
        i += cnt
    return ret if ret < 0 else i


class _SgxVmOps:
    """``sgx_vm_ops``: fault, mprotect, open, access."""

    name = "sgx_vm_ops"

    def fault(self, vmf: VmFault) -> int:
        return sgx_vma_fault(vmf)

    def open(self, vma: Vma) -> None:
        sgx_vma_open(vma)

    def mprotect(self, vma: Vma, start: int, end: int, newflags: int) -> int:
        return sgx_vma_mprotect(vma, start, end, newflags)

    def access(self, vma: Vma, addr: int, buf: bytearray, write: bool) -> int:
        return sgx_vma_access(vma, addr, buf, write)


#: The enclave VMA operations (stateless).
SGX_VM_OPS = _SgxVmOps()


def sgx_encl_find(mm: Mm, addr: int) -> Vma | None:
    """The enclave VMA containing ``addr``, or None. Models: encl.h sgx_encl_find()."""
    vma = mm.vma_lookup(addr)
    if vma is None or vma.vm_ops is not SGX_VM_OPS:
        return None
    return vma


# -- mm tracking --------------------------------------------------------------------------------


class SgxEnclMm:
    """``struct sgx_encl_mm``: one mm on an enclave's mm_list, and its mmu notifier."""

    def __init__(self, encl: SgxEncl, mm: Mm) -> None:
        self.encl = encl
        self.mm = mm

    def release(self, mm: Mm) -> None:
        """The mm is exiting. Models: encl.c sgx_mmu_notifier_release() (+ mmu_notifier_put,
        whose free callback sgx_mmu_notifier_free drops the enclave reference)."""
        encl = self.encl
        encl.mm_lock.lock()
        found = self in encl.mm_list
        if found:
            encl.mm_list.remove(self)
        encl.mm_lock.unlock()
        if found:
            encl.srcu.synchronize_srcu()
            if self in mm.mmu_notifiers:
                mm.mmu_notifiers.remove(self)
            encl.refcount.kref_put(sgx_encl_release_kref)

    def unregister(self) -> None:
        """``mmu_notifier_unregister``: calls ->release if still registered, then unhooks."""
        if self in self.mm.mmu_notifiers:
            self.release(self.mm)
            if self in self.mm.mmu_notifiers:
                self.mm.mmu_notifiers.remove(self)

    def __repr__(self) -> str:
        return f"SgxEnclMm(encl={self.encl.id}, mm={self.mm.owner})"


def sgx_encl_find_mm(encl: SgxEncl, mm: Mm) -> SgxEnclMm | None:
    """Models: encl.c sgx_encl_find_mm()."""
    idx = encl.srcu.srcu_read_lock()
    try:
        for encl_mm in encl.mm_list:
            if encl_mm.mm is mm:
                return encl_mm
        return None
    finally:
        encl.srcu.srcu_read_unlock(idx)


def sgx_encl_mm_add(encl: SgxEncl, mm: Mm) -> int:
    """Put ``mm`` on the enclave's mm_list (once), taking an enclave reference.

    Models: encl.c sgx_encl_mm_add(). Outcome: 0.
    """
    if sgx_encl_find_mm(encl, mm) is not None:
        return 0
    encl_mm = SgxEnclMm(encl, mm)
    encl.refcount.kref_get()
    mm.mmu_notifiers.append(encl_mm)
    encl.mm_lock.lock()
    encl.mm_list.insert(0, encl_mm)
    encl.mm_list_version += 1
    encl.mm_lock.unlock()
    return 0


def sgx_encl_cpumask(encl: SgxEncl) -> set[int]:
    """CPUs that may be running the enclave: the union of its live mms' cpumasks.

    Models: encl.c sgx_encl_cpumask() (also main.c sgx_encl_ewb_cpumask()).
    """
    cpus: set[int] = set()
    idx = encl.srcu.srcu_read_lock()
    try:
        for encl_mm in list(encl.mm_list):
            if encl_mm.mm.mm_users <= 0:
                continue
            cpus |= encl_mm.mm.cpumask
    finally:
        encl.srcu.srcu_read_unlock(idx)
    encl.cpumask = cpus
    return cpus


def sgx_encl_test_and_clear_young(mm: Mm, encl: SgxEncl, pfn: int) -> bool:
    """Test and clear the Accessed bit of the PTE mapping an enclave page in ``mm``.

    Models: encl.c sgx_encl_test_and_clear_young(). Outcome: True if it was set.
    """
    addr = pfn << PAGE_SHIFT
    vma = sgx_encl_find(mm, addr)
    if vma is None or vma.vm_private_data is not encl:
        return False
    pte = mm.ptes.get(pfn)
    if pte is None or not pte.accessed:
        return False
    pte.accessed = False
    return True


def sgx_zap_enclave_ptes(encl: SgxEncl, addr: int) -> None:
    """Remove the PTEs mapping ``addr`` in every mm of the enclave.

    Models: encl.c sgx_zap_enclave_ptes() (retry while mm_list_version changes).
    """
    while True:
        version = encl.mm_list_version
        idx = encl.srcu.srcu_read_lock()
        try:
            for encl_mm in list(encl.mm_list):
                mm = encl_mm.mm
                if mm.mm_users <= 0:
                    continue
                mm.mmap_lock.down_read()
                vma = sgx_encl_find(mm, addr)
                if vma is not None and vma.vm_private_data is encl:
                    mm.zap_vma_ptes(vma, addr, PAGE_SIZE)
                mm.mmap_lock.up_read()
        finally:
            encl.srcu.srcu_read_unlock(idx)
        if encl.mm_list_version == version:
            return


# -- teardown -------------------------------------------------------------------------------------


def sgx_zap_enclave_range(encl: SgxEncl, start: int, size: int) -> None:
    """Remove every PTE in [start, start + size) of the enclave's VMAs in all its mms.

    Models: the range form of sgx_zap_enclave_ptes() ([MODEL] used when an SVN update kills
    the whole enclave at once).
    """
    idx = encl.srcu.srcu_read_lock()
    try:
        for encl_mm in list(encl.mm_list):
            mm = encl_mm.mm
            if mm.mm_users <= 0:
                continue
            mm.mmap_lock.down_read()
            for vma in list(mm.vmas):
                if vma.vm_private_data is not encl:
                    continue
                lo = max(start, vma.vm_start)
                hi = min(start + size, vma.vm_end)
                if lo < hi:
                    mm.zap_vma_ptes(vma, lo, hi - lo)
            mm.mmap_lock.up_read()
    finally:
        encl.srcu.srcu_read_unlock(idx)


def sgx_encl_release_kref(ref: Kref) -> None:
    """``kref_put(&encl->refcount, sgx_encl_release)`` target."""
    encl = ref.container
    assert isinstance(encl, SgxEncl)
    sgx_encl_release(encl)


def sgx_encl_release(encl: SgxEncl) -> None:
    """Destroy an enclave: children, then the SECS, then VA pages, then the backing store.

    Models: encl.c sgx_encl_release(): for every page-array entry that is resident, take it off
    the active list (an entry the reclaimer holds is skipped and its record leaked), EREMOVE it
    and count the child out; destroy the page array; EREMOVE the SECS if no child is left; EREMOVE
    every VA page; drop the backing file; WARN if mms remain, children remain or the SECS is still
    there; free the enclave; (6.19) drop the SGX usage count.
    """
    k = encl.k
    # [MODEL fix] the release path's EREMOVEs never overlap EUPDATESVN (unguarded as posted).
    guard = k.svn.encls_fence_begin()
    try:
        _sgx_encl_release(encl)
    finally:
        k.svn.encls_fence_end(guard)
    # RFC v2 patch 06: an update may be waiting for this enclave's VA and SECS pages.
    k.svn.sgx_zap_wakeup()
    k.sgx_dec_usage_count()


def _sgx_encl_release(encl: SgxEncl) -> None:
    k = encl.k
    pages = encl.pages
    if k.batch_ok():
        _release_resident_batch(k, encl)
    else:
        for pfn in pages.pfns():
            page = pages.epc(pfn)
            if page >= 0:
                if k.sgx_unmark_page_reclaimable(page):
                    continue
                k.sgx_encl_free_epc_page(page)
                encl.secs_child_cnt -= 1
                pages.set_epc(pfn, -1)
            cond_resched(k.sched)
    pages.clear()
    if encl.secs_child_cnt == 0 and encl.secs_epc >= 0:
        k.sgx_encl_free_epc_page(encl.secs_epc)
        encl.secs_epc = -1
    while encl.va_pages:
        va = next(iter(encl.va_pages))
        del encl.va_pages[va]
        if encl.va_epc[va] >= 0:
            k.sgx_encl_free_epc_page(encl.va_epc[va])
        _va_release_id(encl, va)
    if encl.backing is not None:
        encl.backing.release()
        encl.backing = None
    k.log.WARN_ON_ONCE("sgx_encl_release:mm_list", bool(encl.mm_list), site="sgx_encl_release")
    k.log.WARN_ON_ONCE("sgx_encl_release:secs_child_cnt", encl.secs_child_cnt, site="sgx_encl_release")
    k.log.WARN_ON_ONCE("sgx_encl_release:secs", encl.secs_epc >= 0, site="sgx_encl_release")
    encl.released = True
    k.enclaves.pop(encl.id, None)


def _release_resident_batch(k: Kernel, encl: SgxEncl) -> None:
    """The resident-page loop of sgx_encl_release for the single-task case, vectorized per
    page-array chunk: the same pages leave the active list, are EREMOVEd and freed in the same
    order, and count out of ``secs_child_cnt`` (no page can be isolated by a reclaimer here)."""
    found: list[npt.NDArray[np.int64]] = []
    for key in sorted(encl.pages.chunks):
        c = encl.pages.chunks[key]
        sel = c._present & (c._epc >= 0)
        if sel.any():
            found.append(c._epc[sel].astype(np.int64))
            c._epc[sel] = -1
    if not found:
        return
    arr = np.concatenate(found)
    tracked = arr[(k.epc_flags[arr] & SGX_EPC_PAGE_RECLAIMER_TRACKED) != 0]
    k.lists.del_many(tracked)
    k.epc_flags[tracked] &= ~np.uint8(SGX_EPC_PAGE_RECLAIMER_TRACKED)
    encl.secs_child_cnt -= len(arr)
    _free_epc_pages_batch(k, arr)


def _free_epc_pages_batch(k: Kernel, pages: npt.NDArray[np.int64]) -> None:
    """``sgx_encl_free_epc_page`` for many pages with one hardware EREMOVE batch (same results)."""
    arr = np.asarray(pages, dtype=np.int64)
    results = E.eremove_many(k, arr)
    ok = arr[results == 0]
    k._free_pages_bulk(ok)
    for p, r in zip(arr[results != 0].tolist(), results[results != 0].tolist(), strict=True):
        k.log.WARN_ONCE("EREMOVE", True, E.EREMOVE_ERROR_MESSAGE, r, r, site="sgx_encl_free_epc_page")
        k.epc_flags[p] |= 0x80
        k.count("epc_pages_leaked")
        k.svn.sgx_zap_abort()


# ---------------------------------------------------------------------------------------
# Validation


def _validate_dead_encl(k: Kernel, encl: SgxEncl) -> list[str]:
    """A dead enclave (an SVN update took its EPC, fixed default) holds no EPC page, no VA page,
    no backing, and owns no EPC page record; only pages a failed zap left resident remain."""
    out: list[str] = []
    name = f"encl {encl.id} (dead)"
    owned = np.flatnonzero(
        (k.epc_owner_id == encl.id)
        & np.isin(k.epc_owner_kind, [EpcOwner.ENCL_PAGE, EpcOwner.SECS, EpcOwner.VA_PAGE])
    )
    held = {p for c in encl.pages.chunks.values() for p in c._epc[c._epc >= 0].tolist()}
    held |= {encl.secs_epc} if encl.secs_epc >= 0 else set()
    held |= {encl.va_epc[va] for va in encl.va_pages}
    for page in owned.tolist():
        if page not in held:
            out.append(f"{name}: EPC {page} owned but not held")
    if encl.backing is not None and not held:
        out.append(f"{name}: backing kept after a complete zap")
    return out


def validate_encl(k: Kernel, encl: SgxEncl) -> list[str]:
    """Check one enclave's records against the EPCM and the EPC page records (drgn style).

    Checks: resident entries are owned by this enclave at their PFN, valid in the EPCM at their
    address with the recorded type, children of the enclave's SECS; evicted entries hold an
    allocated VA slot and have backing contents; the driver's ``secs_child_cnt`` equals the
    resident entries and the hardware's child count; VA pages are valid PT_VA pages owned by the
    enclave, and their used slots equal the evicted pages (+ an evicted SECS); page_cnt counts
    the SECS and every entry.
    """
    out: list[str] = []
    name = f"encl {encl.id}"
    if encl.flags & SGX_ENCL_DEAD and not k.svn.as_posted:
        return _validate_dead_encl(k, encl)
    epcm = k.machine.epc.epcm
    resident = 0
    evicted_slots = 0
    for key in sorted(encl.pages.chunks):
        c = encl.pages.chunks[key]
        base = key << _CHUNK_SHIFT
        present = np.flatnonzero(c._present)
        res = present[c._epc[present] >= 0]
        ev = present[c._epc[present] < 0]
        resident += len(res)
        for i in res.tolist():
            pfn = base + i
            page = int(c.epc[i])
            if (
                k.epc_owner_kind[page] != EpcOwner.ENCL_PAGE
                or k.epc_owner_id[page] != encl.id
                or int(k.epc_owner_index[page]) != pfn
            ):
                out.append(f"{name}: page {pfn:#x} EPC {page} owner record wrong")
            if not epcm.valid[page]:
                out.append(f"{name}: page {pfn:#x} EPC {page} invalid in the EPCM")
                continue
            if int(epcm.linaddr[page]) != pfn << PAGE_SHIFT:
                out.append(f"{name}: page {pfn:#x} EPCM linaddr {int(epcm.linaddr[page]):#x}")
            if int(epcm.pt[page]) != int(c.type[i]):
                out.append(f"{name}: page {pfn:#x} type {int(c.type[i])} but EPCM PT {int(epcm.pt[page])}")
            if encl.secs_epc >= 0 and int(epcm.secs[page]) != encl.secs_epc:
                out.append(f"{name}: page {pfn:#x} child of SECS {int(epcm.secs[page])}, not {encl.secs_epc}")
        for i in ev.tolist():
            pfn = base + i
            va = int(c.va[i])
            off = int(c.desc[i]) & SGX_ENCL_PAGE_VA_OFFSET_MASK
            if not 0 <= va < len(encl.va_epc) or va not in encl.va_pages or not va_slot_used(encl, va, off):
                out.append(f"{name}: evicted page {pfn:#x} has no VA slot")
            else:
                evicted_slots += 1
            idx = pfn - encl.base_pfn
            if encl.backing is None or encl.backing.find_page(idx) is None:
                out.append(f"{name}: evicted page {pfn:#x} has no backing page")
    if encl.secs_epc < 0 and encl.flags & SGX_ENCL_CREATED:
        if encl.secs_va in encl.va_pages and va_slot_used(
            encl, encl.secs_va, encl.secs_desc & SGX_ENCL_PAGE_VA_OFFSET_MASK
        ):
            evicted_slots += 1
        else:
            out.append(f"{name}: SECS neither resident nor evicted")
    if encl.secs_child_cnt != resident:
        out.append(f"{name}: secs_child_cnt {encl.secs_child_cnt} but {resident} resident pages")
    if encl.secs_epc >= 0:
        page = encl.secs_epc
        if k.epc_owner_kind[page] != EpcOwner.SECS or k.epc_owner_id[page] != encl.id:
            out.append(f"{name}: SECS EPC {page} owner record wrong")
        if not epcm.valid[page] or epcm.pt[page] != PageType.PT_SECS:
            out.append(f"{name}: SECS EPC {page} not a valid PT_SECS page")
        state = k.machine.epc.secs_state.get(page)
        if state is not None and state.child_count != resident:
            out.append(f"{name}: hardware child count {state.child_count}, driver {resident}")
    used = 0
    for va in encl.va_pages:
        page = encl.va_epc[va]
        used += encl.va_nused[va]
        if (
            page < 0
            or k.epc_owner_kind[page] != EpcOwner.VA_PAGE
            or k.epc_owner_id[page] != encl.id
            or int(k.epc_owner_index[page]) != va
        ):
            out.append(f"{name}: VA page {va} EPC {page} owner record wrong")
        elif not epcm.valid[page] or epcm.pt[page] != PageType.PT_VA:
            out.append(f"{name}: VA page {va} EPC {page} not a valid PT_VA page")
    if used != evicted_slots:
        out.append(f"{name}: {used} VA slots in use but {evicted_slots} evicted pages")
    if encl.flags & SGX_ENCL_CREATED:
        if encl.page_cnt != encl.pages.count + 1:
            out.append(f"{name}: page_cnt {encl.page_cnt} != {encl.pages.count} entries + SECS")
        if len(encl.va_pages) < -(-encl.page_cnt // SGX_VA_SLOT_COUNT):
            out.append(f"{name}: {len(encl.va_pages)} VA pages for page_cnt {encl.page_cnt}")
    for encl_mm in encl.mm_list:
        if encl_mm not in encl_mm.mm.mmu_notifiers:
            out.append(f"{name}: {encl_mm!r} not registered with its mm")
    return out


def encl_of_file(file: Any) -> SgxEncl | None:
    """The enclave behind an open /dev/sgx_enclave file."""
    data = getattr(file, "private_data", None)
    return data if isinstance(data, SgxEncl) else None

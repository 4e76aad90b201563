"""The /dev/sgx_enclave ioctls, with Linux's validation order and errno.

Every handler reads its argument with copy_from_user from the calling process's memory and
writes in/out fields back with copy_to_user, returning 0 or a negative errno like the kernel
function it models (the :class:`~sgxsim.kernel.process.Process` turns that into ``OSError``).

Models: arch/x86/kernel/cpu/sgx/ioctl.c (Linux 6.x mainline, commit 1260ed77): sgx_ioctl,
sgx_ioc_enclave_create / sgx_encl_create, sgx_ioc_enclave_add_pages / sgx_encl_add_page /
__sgx_encl_add_page / __sgx_encl_extend / sgx_validate_secinfo / sgx_validate_offset_length,
sgx_ioc_enclave_init / sgx_encl_init (EINIT retry loop, LEPUBKEYHASH = MRSIGNER),
sgx_ioc_enclave_provision, sgx_ioc_sgx2_ready, sgx_enclave_etrack,
sgx_ioc_enclave_restrict_permissions, sgx_ioc_enclave_modify_types,
sgx_ioc_enclave_remove_pages.
Differs: kmalloc/kzalloc failures (-ENOMEM) are not modelled; an uncontended run of unmeasured
pages in SGX_IOC_ENCLAVE_ADD_PAGES may use the hardware EADD batch path, which leaves exactly
the state the page-by-page path leaves (see :func:`_add_pages_batch`).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from sgxsim.hw import encls as hw_encls
from sgxsim.hw.arch import (
    PAGE_SHIFT,
    PAGE_SIZE,
    SECINFO_PAGE_TYPE_MASK,
    SECINFO_PERMISSION_MASK,
    SECINFO_RESERVED_MASK,
    SGX_ATTR_UNPRIV_MASK,
    Attributes,
    PageType,
    SecinfoFlags,
    SgxStatus,
)
from sgxsim.kernel import encl as em
from sgxsim.kernel import encls as E  # noqa: N812
from sgxsim.kernel import uapi as U  # noqa: N812
from sgxsim.kernel.encl import (
    SGX_ENCL_CREATED,
    SGX_ENCL_DEAD,
    SGX_ENCL_DEBUG,
    SGX_ENCL_INITIALIZED,
    SGX_ENCL_IOCTL,
    SGX_VA_SLOT_COUNT,
    SgxEncl,
    sgx_encl_grow,
    sgx_encl_shrink,
    va_list_add,
    write_pageinfo,
    write_secinfo,
)
from sgxsim.kernel.fs import ShmemFile
from sgxsim.kernel.mm import (
    VM_MAYEXEC,
    VM_READ,
    VM_WRITE,
    copy_from_user,
    copy_to_user,
    get_user_page,
    get_user_pages_read,
)
from sgxsim.kernel.provision import sgx_set_attribute
from sgxsim.kernel.sgx import SGX_NR_LOW_PAGES, EpcOwner

if TYPE_CHECKING:
    from sgxsim.kernel.fs import File
    from sgxsim.kernel.main import Kernel

__all__ = [
    "SGX_EEXTEND_BLOCK_SIZE",
    "SGX_EINIT_SLEEP_COUNT",
    "SGX_EINIT_SLEEP_TIME_MS",
    "SGX_EINIT_SPIN_COUNT",
    "sgx_ioctl",
    "sgx_validate_offset_length",
    "sgx_validate_secinfo",
]

SGX_EEXTEND_BLOCK_SIZE = 256
SGX_EINIT_SPIN_COUNT = 20
SGX_EINIT_SLEEP_COUNT = 50
SGX_EINIT_SLEEP_TIME_MS = 20
SGX_LAUNCH_TOKEN_SIZE = 304
SIGSTRUCT_SIZE = 1808

_U64 = (1 << 64) - 1
_ADD = struct.Struct("<QQQQQQ")
_MOD = struct.Struct("<QQQQQ")
_REM = struct.Struct("<QQQ")


def _u64(raw: bytes, off: int = 0) -> int:
    return int.from_bytes(raw[off : off + 8], "little")


# ---------------------------------------------------------------------------------------
# Validation helpers


class _EarlyReturn(Exception):
    """As posted, the SGX2 ioctls ``return -EBUSY`` from inside their page loop, skipping the
    write-back of ``count`` (RFC v2 patch 01); the ioctl wrapper catches this and returns."""

    def __init__(self, ret: int) -> None:
        super().__init__(ret)
        self.ret = ret


def _page_loop_epc_locked(k: Kernel) -> bool:
    """Per-page check of the EPC lock inside a page loop (the caller holds the SRCU read side).

    Models: RFC v2 patch 01 in the ADD_PAGES and SGX2 loops. Outcome: True if the loop must
    stop with -EBUSY (fixed: ``count`` reports the partial progress); as posted the SGX2 loops
    return directly (:class:`_EarlyReturn`).
    """
    if not k.sgx_epc_is_locked():
        return False
    k.count("ioctls_ebusy_epc_locked")
    return True


def _sgx2_page_guard(k: Kernel, encl: SgxEncl) -> int:
    """The per-page checks of the SGX2 loops (caller holds the SRCU read side): 0, -EBUSY (EPC
    locked: fixed, ``count`` reports the pages done; as posted, :class:`_EarlyReturn` skips the
    write-back), or -EIO (the enclave died in an SVN update)."""
    if _page_loop_epc_locked(k):
        if k.svn.as_posted:
            raise _EarlyReturn(-U.EBUSY)
        return -U.EBUSY
    if _dead_in_section(encl):
        return -U.EIO
    return 0


def _dead_in_section(encl: SgxEncl) -> bool:
    """[MODEL fix] Whether an SVN update killed the enclave; checked inside the SRCU read side,
    where no zap can start, because an ioctl may have passed its entry check before the zap."""
    return bool(encl.flags & SGX_ENCL_DEAD)


_T = TypeVar("_T")


def _with_epc_read(k: Kernel, fn: Callable[[], _T]) -> _T:
    """Run an ioctl body (or an SGX2 page loop) inside an SRCU read-side section of
    ``sgx_lock_epc_srcu``; the body checks the lock itself, per call or per page."""
    idx = k.sgx_epc_read_lock()
    try:
        return fn()
    finally:
        k.sgx_epc_read_unlock(idx)


def _epc_locked_entry(k: Kernel) -> bool:
    """Entry check of a guarded ioctl (caller holds the read side): True -> -EBUSY."""
    if k.sgx_epc_is_locked():
        k.count("ioctls_ebusy_epc_locked")
        return True
    return False


def sgx_validate_offset_length(encl: SgxEncl, offset: int, length: int) -> int:
    """Models: ioctl.c sgx_validate_offset_length(): page-aligned offset, non-zero page-aligned
    length, no u64 overflow, last page inside ELRANGE. Outcomes: 0 or -EINVAL."""
    if offset & (PAGE_SIZE - 1):
        return -U.EINVAL
    if not length or length & (PAGE_SIZE - 1):
        return -U.EINVAL
    if offset + length > _U64:
        return -U.EINVAL
    if ((offset + length - PAGE_SIZE) & _U64) >= encl.size:
        return -U.EINVAL
    return 0


def sgx_validate_secinfo(raw: bytes) -> int:
    """Models: ioctl.c sgx_validate_secinfo(): REG or TCS only; W needs R; TCS has no permission
    bits; no reserved flag bits (PENDING/MODIFIED/PR included); reserved bytes zero.
    Outcomes: 0 or -EINVAL."""
    flags = _u64(raw)
    perm = flags & SECINFO_PERMISSION_MASK
    pt = flags & SECINFO_PAGE_TYPE_MASK
    if pt not in (int(PageType.PT_REG) << 8, int(PageType.PT_TCS) << 8):
        return -U.EINVAL
    if perm & SecinfoFlags.W and not perm & SecinfoFlags.R:
        return -U.EINVAL
    if pt == int(PageType.PT_TCS) << 8 and perm:
        return -U.EINVAL
    if flags & SECINFO_RESERVED_MASK:
        return -U.EINVAL
    if any(raw[8:64]):
        return -U.EINVAL
    return 0


# ---------------------------------------------------------------------------------------
# CREATE


def sgx_encl_create(k: Kernel, encl: SgxEncl, secs: bytes) -> int:
    """ECREATE the enclave: VA page, backing file, SECS page.

    Models: ioctl.c sgx_encl_create(). Outcomes: 0; -EINVAL (size not a power of two);
    allocation errnos; -EIO (ECREATE faulted). Unwinds SECS page, backing and VA page on error.
    """
    size = _u64(secs, 0)
    base = _u64(secs, 8)
    attributes = _u64(secs, 48)
    if size == 0 or size & (size - 1):
        return -U.EINVAL
    va = sgx_encl_grow(encl, True)
    if va is not None and va < 0:
        return va
    if va is not None:
        va_list_add(encl, va)
    encl_size = size + PAGE_SIZE
    encl.backing = ShmemFile(k, "SGX backing", encl_size + (encl_size >> 5))
    secs_epc = k.sgx_alloc_epc_page(EpcOwner.SECS, encl.id, 0, True)
    if secs_epc < 0:
        ret = secs_epc
    else:
        encl.secs_epc = secs_epc
        src = k.dram_alloc()
        k.machine.dram.write(src, secs)
        secinfo = write_secinfo(k, bytes(64))
        pginfo = write_pageinfo(k, 0, src, secinfo, 0)
        r = E.ecreate(k, pginfo, secs_epc)
        k.dram_free(src)
        if not r:
            if attributes & Attributes.DEBUG:
                encl.flags |= SGX_ENCL_DEBUG
            encl.base = base
            encl.size = size
            encl.attributes = attributes
            encl.attributes_mask = SGX_ATTR_UNPRIV_MASK
            encl.flags |= SGX_ENCL_CREATED
            return 0
        ret = -U.EIO
        k.sgx_encl_free_epc_page(encl.secs_epc)
        encl.secs_epc = -1
    encl.backing.release()
    encl.backing = None
    sgx_encl_shrink(encl, va)
    return ret


def sgx_ioc_enclave_create(k: Kernel, encl: SgxEncl, arg: int) -> int:
    """Models: ioctl.c sgx_ioc_enclave_create(): already created -> -EINVAL; copy the argument,
    then the 4 KiB SECS (-EFAULT); sgx_encl_create()."""
    if encl.flags & SGX_ENCL_CREATED:
        return -U.EINVAL
    raw = copy_from_user(k, arg, 8)
    if raw is None:
        return -U.EFAULT
    # kmalloc(PAGE_SIZE) for the SECS copy.
    secs_buf = k.dram_alloc()
    secs = copy_from_user(k, _u64(raw), PAGE_SIZE)
    if secs is None:
        k.dram_free(secs_buf)
        return -U.EFAULT

    def body() -> int:
        if _epc_locked_entry(k):
            if k.svn.as_posted:
                # As posted: returns before kfree(secs), leaking the copy.
                k.count("secs_copies_leaked")
                return -U.EBUSY
            k.dram_free(secs_buf)
            return -U.EBUSY
        ret = sgx_encl_create(k, encl, secs)
        k.dram_free(secs_buf)
        return ret

    return _with_epc_read(k, body)


# ---------------------------------------------------------------------------------------
# ADD_PAGES


def _sgx_encl_add_page(k: Kernel, encl: SgxEncl, pfn: int, epc: int, secinfo: bytes, src: int) -> int:
    """Models: ioctl.c __sgx_encl_add_page(): source VMA (none -> -EFAULT; no VM_MAYEXEC, i.e. a
    noexec mount -> -EACCES), get_user_pages (-EFAULT), EADD (-EIO)."""
    proc = k.current_proc
    if proc is None:
        return -U.EFAULT
    vma = proc.mm.find_vma(src)
    if vma is None:
        return -U.EFAULT
    if not vma.vm_flags & VM_MAYEXEC:
        return -U.EACCES
    src_page = get_user_page(k, src)
    if src_page is None:
        return -U.EFAULT
    si = write_secinfo(k, secinfo)
    pginfo = write_pageinfo(k, pfn << PAGE_SHIFT, src_page, si, k.phys(encl.secs_epc))
    return -U.EIO if E.eadd(k, pginfo, epc) else 0


def _sgx_encl_extend(k: Kernel, encl: SgxEncl, epc: int) -> int:
    """Models: ioctl.c __sgx_encl_extend(): 16 x EEXTEND of 256 bytes. Outcomes: 0 or -EIO."""
    for offset in range(0, PAGE_SIZE, SGX_EEXTEND_BLOCK_SIZE):
        ret = E.eextend(k, encl.secs_epc, epc, offset)
        if ret:
            if E.encls_failed(ret):
                E.ENCLS_WARN(k, ret, "EEXTEND")
            return -U.EIO
    return 0


def sgx_encl_add_page(k: Kernel, encl: SgxEncl, src: int, offset: int, secinfo: bytes, flags: int) -> int:
    """Add one page: allocate EPC, grow, insert into page_array *before* EADD, EADD, EEXTEND.

    Models: ioctl.c sgx_encl_add_page(). Outcomes: 0; -ENOMEM/-ERESTARTSYS (allocation);
    -EBUSY (page already added); -EFAULT/-EACCES (source); -EIO (EADD/EEXTEND).
    """
    secinfo_flags = _u64(secinfo)
    prot = em.sgx_encl_page_alloc(encl, offset, secinfo_flags)
    pfn = (encl.base + offset) >> PAGE_SHIFT
    epc = k.sgx_alloc_epc_page(EpcOwner.ENCL_PAGE, encl.id, pfn, True)
    if epc < 0:
        return epc
    va = sgx_encl_grow(encl, True)
    if va is not None and va < 0:
        k.sgx_encl_free_epc_page(epc)
        return va
    mm = k.current_proc.mm if k.current_proc is not None else None
    if mm is not None:
        mm.mmap_lock.down_read()
    encl.lock.lock()
    try:
        if va is not None:
            va_list_add(encl, va)
        # Insert before EADD: EADD extends MRENCLAVE and cannot be undone, so a duplicate must
        # be refused first.
        if not encl.pages.insert(pfn, prot):
            ret = -U.EBUSY
            sgx_encl_shrink(encl, va)
        else:
            ret = _sgx_encl_add_page(k, encl, pfn, epc, secinfo, src)
            if not ret:
                encl.pages.set_epc(pfn, epc)
                encl.pages.set_type(pfn, (secinfo_flags & SECINFO_PAGE_TYPE_MASK) >> 8)
                encl.secs_child_cnt += 1
                if flags & U.SGX_PAGE_MEASURE:
                    ret = _sgx_encl_extend(k, encl, epc)
                if not ret:
                    k.sgx_mark_page_reclaimable(epc)
                    return 0
            encl.pages.erase(pfn)
            sgx_encl_shrink(encl, va)
    finally:
        encl.lock.unlock()
        if mm is not None:
            mm.mmap_lock.up_read()
    k.sgx_encl_free_epc_page(epc)
    return ret


def _batch_len(k: Kernel, encl: SgxEncl, src: int, offset: int, npages: int, secinfo_flags: int) -> int:
    """How many of the next pages the batch path may add (0: use the per-page path)."""
    if (secinfo_flags & SECINFO_PAGE_TYPE_MASK) != int(PageType.PT_REG) << 8:
        return 0
    free = k.sgx_nr_free_pages.read()
    # Each page needs one EPC page, plus a VA page every 512; never dip into reclaim.
    n = min(npages, max(0, free - 2 - free // SGX_VA_SLOT_COUNT))
    if n < 2:
        return 0
    pfn = (encl.base + offset) >> PAGE_SHIFT
    if encl.pages.any_present(pfn, n):
        return 0
    proc = k.current_proc
    if proc is None:
        return 0
    vma = proc.mm.vma_lookup(src)
    if vma is None or not vma.vm_flags & VM_MAYEXEC or not vma.vm_flags & VM_READ:
        return 0
    return min(n, (vma.vm_end - src) >> PAGE_SHIFT)


def _add_pages_batch(
    k: Kernel, encl: SgxEncl, src: int, offset: int, n: int, secinfo: bytes
) -> tuple[int, int]:
    """Add up to ``n`` unmeasured REG pages exactly as repeated sgx_encl_add_page would, using the
    hardware EADD batch. Returns (pages added, errno of the page that failed or 0).

    Equivalence with the per-page path: EPC pages are taken in the same order (data page, then a
    VA page whenever the page count crosses a multiple of 512: one bulk pop of the free lists
    returns exactly the sequence of single allocations), VA pages join the list in the same order,
    entries are inserted before EADD, EADD blocks are measured in page order, pages are marked
    reclaimable in order, and ksgxd is woken under the same condition. If EADD stops at page
    ``done``, the pages taken for later (never attempted) pages go back to the *head* of the free
    lists in reverse order (restoring the lists exactly), and page ``done`` takes the per-page
    error path.
    """
    secinfo_flags = _u64(secinfo)
    prot = em.sgx_encl_page_alloc(encl, offset, secinfo_flags)
    pfn0 = (encl.base + offset) >> PAGE_SHIFT
    proc = k.current_proc
    assert proc is not None
    srcs_l = get_user_pages_read(k, src, n)
    if srcs_l is None:
        return 0, 0
    # Which data pages need a VA page right after them (sgx_encl_grow's page_cnt % 512 test).
    cnt = encl.page_cnt
    need_va = ((cnt + np.arange(n, dtype=np.int64)) % SGX_VA_SLOT_COUNT) == 0
    va_js = np.flatnonzero(need_va)
    total = n + len(va_js)
    got = k.sgx_alloc_epc_pages_bulk(total)
    if got is None:
        return 0, 0
    # Data page j sits at j + (VA pages allocated before it); a VA page right after its page.
    before = np.cumsum(need_va) - need_va
    epcs = got[np.arange(n, dtype=np.int64) + before]
    vas: dict[int, int] = {}
    for j in va_js.tolist():
        encl.page_cnt = cnt + j
        va = em.sgx_encl_grow_with(encl, int(got[j + int(before[j]) + 1]))
        if va is None or va < 0:
            raise AssertionError("EPA failed in the batch path")
        vas[j] = va
    encl.page_cnt = cnt + n
    k.set_owners(epcs, EpcOwner.ENCL_PAGE, encl.id, np.arange(pfn0, pfn0 + n, dtype=np.int64))
    srcs = np.array(srcs_l, dtype=np.int64)
    mm = proc.mm
    mm.mmap_lock.down_read()
    encl.lock.lock()
    try:
        for va in vas.values():
            va_list_add(encl, va)
        encl.pages.insert_run(pfn0, n, prot)
        phys = E.phys_many(k, epcs)
        lin = (np.arange(n, dtype=np.int64) + pfn0) << PAGE_SHIFT
        k.sched.preempt("encls_begin:EADD")
        done, _result = hw_encls.eadd_batch(
            k.machine, k.current_cpu(), k.phys(encl.secs_epc), phys, lin, secinfo_flags, srcs
        )
        k.sched.preempt("encls_end:EADD")
        encl.pages.set_run(pfn0, epcs[:done], int(PageType.PT_REG))
        encl.secs_child_cnt += done
        k.sgx_mark_pages_reclaimable(epcs[:done])
        # Page by page, every allocation after the first would have seen a non-empty active list
        # and woken ksgxd below the low watermark; free pages only decreased, so the last one
        # decides.
        if k.sgx_nr_free_pages.read() < SGX_NR_LOW_PAGES and not k.lists.empty(k.sgx_active_page_list):
            k.wake_ksgxd()
        if done == n:
            k.count("add_pages_batched", done)
            return done, 0
        # Never-attempted pages: undo their allocations newest first.
        for j in range(n - 1, done, -1):
            encl.pages.erase(pfn0 + j)
            va = vas.get(j)
            if va is not None:
                encl.va_pages.pop(va, None)
                E.eremove(k, encl.va_epc[va])
                k.sgx_unalloc_epc_page(encl.va_epc[va])
                em._va_release_id(encl, va)
            encl.page_cnt -= 1
            k.sgx_unalloc_epc_page(int(epcs[j]))
        # The failing page: sgx_encl_add_page's err_out path.
        encl.pages.erase(pfn0 + done)
        sgx_encl_shrink(encl, vas.get(done))
    finally:
        encl.lock.unlock()
        mm.mmap_lock.up_read()
    k.sgx_encl_free_epc_page(int(epcs[done]))
    k.count("add_pages_batched", done)
    return done, -U.EIO


def sgx_ioc_enclave_add_pages(k: Kernel, encl: SgxEncl, arg: int) -> int:
    """Models: ioctl.c sgx_ioc_enclave_add_pages(): not created or already initialized ->
    -EINVAL; copy (-EFAULT); src not page aligned -> -EINVAL; offset/length -> -EINVAL; copy
    SECINFO (-EFAULT); validate SECINFO (-EINVAL); then per page (a pending signal stops the loop,
    -ERESTARTSYS only before the first page) sgx_encl_add_page; ``count`` = bytes added, copied
    back (-EFAULT)."""
    if not encl.flags & SGX_ENCL_CREATED or encl.flags & SGX_ENCL_INITIALIZED:
        return -U.EINVAL
    raw = copy_from_user(k, arg, _ADD.size)
    if raw is None:
        return -U.EFAULT
    src, offset, length, secinfo_addr, flags, _count = _ADD.unpack(raw)
    if src & (PAGE_SIZE - 1):
        return -U.EINVAL
    if sgx_validate_offset_length(encl, offset, length):
        return -U.EINVAL
    secinfo = copy_from_user(k, secinfo_addr, 64)
    if secinfo is None:
        return -U.EFAULT
    if sgx_validate_secinfo(secinfo):
        return -U.EINVAL
    c = 0
    ret = 0
    idx = k.sgx_epc_read_lock()
    try:
        c, ret = _add_pages_loop(k, encl, src, offset, length, secinfo, flags)
    finally:
        k.sgx_epc_read_unlock(idx)
    out = _ADD.pack(src, offset, length, secinfo_addr, flags, c)
    if not copy_to_user(k, arg, out):
        return -U.EFAULT
    return ret


def _add_pages_loop(
    k: Kernel, encl: SgxEncl, src: int, offset: int, length: int, secinfo: bytes, flags: int
) -> tuple[int, int]:
    """The page loop of ADD_PAGES. Returns (bytes added, ret)."""
    c = 0
    ret = 0
    while c < length:
        if k.signal_pending():
            if not c:
                ret = -U.ERESTARTSYS
            break
        if _page_loop_epc_locked(k):
            ret = -U.EBUSY
            break
        if _dead_in_section(encl):
            ret = -U.EIO
            break
        if k.batch_ok() and not flags & U.SGX_PAGE_MEASURE:
            n = _batch_len(k, encl, src + c, offset + c, (length - c) >> PAGE_SHIFT, _u64(secinfo))
            if n:
                done, ret = _add_pages_batch(k, encl, src + c, offset + c, n, secinfo)
                c += done * PAGE_SIZE
                if ret:
                    break
                if done:
                    continue
        ret = sgx_encl_add_page(k, encl, src + c, offset + c, secinfo, flags)
        if ret:
            break
        c += PAGE_SIZE
    return c, ret


# ---------------------------------------------------------------------------------------
# INIT


def sgx_encl_init(k: Kernel, encl: SgxEncl, sigstruct: bytes, sig_page: int, token: int) -> int:
    """Check attributes against what is allowed and supported, then EINIT with the
    launch-control MSRs set to the signer's hash, retrying on SGX_UNMASKED_EVENT.

    Models: ioctl.c sgx_encl_init(). Outcomes: 0; -EACCES (attribute not allowed, e.g.
    PROVISIONKEY without SGX_IOC_ENCLAVE_PROVISION, EINITTOKENKEY always); -EINVAL (reserved
    attribute/misc/xfrm bits requested); -ERESTARTSYS (signal while retrying); -EIO (EINIT
    faulted); -EPERM (EINIT returned an SGX error code).
    """
    if encl.attributes & ~encl.attributes_mask:
        return -U.EACCES
    misc, misc_mask = struct.unpack_from("<II", sigstruct, 900)
    attributes, xfrm, attributes_mask, xfrm_mask = struct.unpack_from("<QQQQ", sigstruct, 928)
    if attributes & attributes_mask & k.sgx_attributes_reserved_mask:
        return -U.EINVAL
    if misc & misc_mask & k.sgx_misc_reserved_mask:
        return -U.EINVAL
    if xfrm & xfrm_mask & k.sgx_xfrm_reserved_mask:
        return -U.EINVAL
    mrsigner = hashlib.sha256(sigstruct[128:512]).digest()
    encl.lock.lock()
    try:
        ret = 0
        for _ in range(SGX_EINIT_SLEEP_COUNT):
            for _ in range(SGX_EINIT_SPIN_COUNT):
                cpu = k.current_cpu()
                k.sgx_update_lepubkeyhash(cpu, mrsigner)
                ret = E.einit(k, sig_page, encl.secs_epc, token)
                if ret != SgxStatus.SGX_UNMASKED_EVENT:
                    break
            if ret != SgxStatus.SGX_UNMASKED_EVENT:
                break
            k.sched.sleep_ns(SGX_EINIT_SLEEP_TIME_MS * 1_000_000, interruptible=True)
            if k.signal_pending():
                return -U.ERESTARTSYS
        if E.encls_faulted(ret):
            if E.encls_failed(ret):
                E.ENCLS_WARN(k, ret, "EINIT")
            return -U.EIO
        if ret:
            k.log.pr_debug("EINIT returned %d", ret)
            return -U.EPERM
        encl.flags |= SGX_ENCL_INITIALIZED
        return 0
    finally:
        encl.lock.unlock()


def sgx_ioc_enclave_init(k: Kernel, encl: SgxEncl, arg: int) -> int:
    """Models: ioctl.c sgx_ioc_enclave_init(): not created / initialized -> -EINVAL; copy
    (-EFAULT); SIGSTRUCT copied to a page, the token at +2048 zeroed (so EINITTOKEN.VALID = 0);
    vendor not 0x0000/0x8086 -> -EINVAL; sgx_encl_init()."""
    if not encl.flags & SGX_ENCL_CREATED or encl.flags & SGX_ENCL_INITIALIZED:
        return -U.EINVAL
    raw = copy_from_user(k, arg, 8)
    if raw is None:
        return -U.EFAULT
    page = k.dram_alloc()
    try:
        token = page + PAGE_SIZE // 2
        k.machine.dram.write(token, bytes(SGX_LAUNCH_TOKEN_SIZE))
        sig = copy_from_user(k, _u64(raw), SIGSTRUCT_SIZE)
        if sig is None:
            return -U.EFAULT
        k.machine.dram.write(page, sig)
        vendor = struct.unpack_from("<I", sig, 16)[0]
        if vendor not in (0x0000, 0x8086):
            return -U.EINVAL
        if not k.svn.guard_unguarded_ioctls():
            # As posted: EINIT is not guarded and may run beside EUPDATESVN.
            return sgx_encl_init(k, encl, sig, page, token)

        def body() -> int:
            if _epc_locked_entry(k):
                return -U.EBUSY
            if _dead_in_section(encl):
                return -U.EIO
            return sgx_encl_init(k, encl, sig, page, token)

        return _with_epc_read(k, body)
    finally:
        k.dram_free(page)


# ---------------------------------------------------------------------------------------
# PROVISION


def sgx_ioc_enclave_provision(k: Kernel, encl: SgxEncl, arg: int) -> int:
    """Models: ioctl.c sgx_ioc_enclave_provision(): copy (-EFAULT); sgx_set_attribute (the fd must
    be an open /dev/sgx_provision, else -EINVAL) adds PROVISIONKEY to the allowed attributes."""
    raw = copy_from_user(k, arg, 8)
    if raw is None:
        return -U.EFAULT

    def body() -> int:
        if k.svn.guard_unguarded_ioctls() and _epc_locked_entry(k):
            return -U.EBUSY
        ret, mask = sgx_set_attribute(k, encl.attributes_mask, _u64(raw) & 0xFFFF_FFFF)
        encl.attributes_mask = mask
        return ret

    return _with_epc_read(k, body)


# ---------------------------------------------------------------------------------------
# SGX2


def sgx_ioc_sgx2_ready(k: Kernel, encl: SgxEncl) -> int:
    """Models: ioctl.c sgx_ioc_sgx2_ready(): no SGX2 -> -ENODEV; not initialized -> -EINVAL."""
    if not k.sgx2:
        return -U.ENODEV
    if not encl.flags & SGX_ENCL_INITIALIZED:
        return -U.EINVAL
    return 0


def sgx_enclave_etrack(k: Kernel, encl: SgxEncl) -> int:
    """ETRACK, IPI the enclave's CPUs (retrying ETRACK once after an IPI if it failed).

    Models: ioctl.c sgx_enclave_etrack(). Outcomes: 0 or -EFAULT.
    """
    ret = E.etrack(k, encl.secs_epc)
    if ret:
        k.pr_err_once("ETRACK", "ETRACK returned %d (0x%x)", ret, ret)
        k.on_each_cpu_mask(em.sgx_encl_cpumask(encl))
        ret = E.etrack(k, encl.secs_epc)
        if ret:
            k.pr_err_once("ETRACK repeat", "ETRACK repeat returned %d (0x%x)", ret, ret)
            return -U.EFAULT
    k.on_each_cpu_mask(em.sgx_encl_cpumask(encl))
    return 0


def _load_for_sgx2(k: Kernel, encl: SgxEncl, addr: int) -> int:
    r = em.sgx_encl_load_page(encl, addr)
    if r < 0:
        return -U.EAGAIN if r == -U.EBUSY else -U.EFAULT
    return 0


def sgx_enclave_restrict_permissions(
    k: Kernel, encl: SgxEncl, offset: int, length: int, permissions: int
) -> tuple[int, int, int]:
    """EMODPR + ETRACK each page. Returns (ret, result, count).

    Models: ioctl.c sgx_enclave_restrict_permissions(): per page sgx_reclaim_direct, load
    (-EAGAIN if being reclaimed, else -EFAULT), type must be REG (-EINVAL), EMODPR (fault ->
    -EFAULT; SGX code -> result, -EFAULT), ETRACK flow (-EFAULT).
    """
    result = 0
    c = 0
    ret = 0
    while c < length:
        addr = encl.base + offset + c
        ret = _sgx2_page_guard(k, encl)
        if ret:
            break
        k.sgx_reclaim_direct()
        encl.lock.lock()
        try:
            ret = _load_for_sgx2(k, encl, addr)
            if ret:
                break
            pfn = addr >> PAGE_SHIFT
            if encl.pages.type(pfn) != PageType.PT_REG:
                ret = -U.EINVAL
                break
            si = write_secinfo(k, em.secinfo_bytes(permissions & SECINFO_PERMISSION_MASK))
            r = E.emodpr(k, si, encl.pages.epc(pfn))
            if E.encls_faulted(r):
                k.pr_err_once("EMODPR", "EMODPR encountered exception %d", E.ENCLS_TRAPNR(r))
                ret = -U.EFAULT
                break
            if E.encls_failed(r):
                result = r
                ret = -U.EFAULT
                break
            if sgx_enclave_etrack(k, encl):
                ret = -U.EFAULT
                break
        finally:
            encl.lock.unlock()
        c += PAGE_SIZE
    return ret, result, c


def sgx_ioc_enclave_restrict_permissions(k: Kernel, encl: SgxEncl, arg: int) -> int:
    """Models: ioctl.c sgx_ioc_enclave_restrict_permissions(): ready (-ENODEV/-EINVAL); copy
    (-EFAULT); offset/length (-EINVAL); permissions beyond RWX (-EINVAL); W without R (-EINVAL);
    result or count non-zero (-EINVAL); restrict; copy back (-EFAULT)."""
    ret = sgx_ioc_sgx2_ready(k, encl)
    if ret:
        return ret
    raw = copy_from_user(k, arg, _MOD.size)
    if raw is None:
        return -U.EFAULT
    offset, length, perms, result, count = _MOD.unpack(raw)
    if sgx_validate_offset_length(encl, offset, length):
        return -U.EINVAL
    if perms & ~SECINFO_PERMISSION_MASK:
        return -U.EINVAL
    if perms & SecinfoFlags.W and not perms & SecinfoFlags.R:
        return -U.EINVAL
    if result or count:
        return -U.EINVAL
    try:
        ret, result, count = _with_epc_read(
            k, lambda: sgx_enclave_restrict_permissions(k, encl, offset, length, perms)
        )
    except _EarlyReturn as e:
        return e.ret
    if not copy_to_user(k, arg, _MOD.pack(offset, length, perms, result & _U64, count)):
        return -U.EFAULT
    return ret


def sgx_enclave_modify_types(
    k: Kernel, encl: SgxEncl, offset: int, length: int, page_type: int
) -> tuple[int, int, int]:
    """EMODT + ETRACK each page. Returns (ret, result, count).

    Models: ioctl.c sgx_enclave_modify_types(): new type must be TCS or TRIM (-EINVAL); per page
    reclaim_direct, load (-EAGAIN/-EFAULT), allowed REG->TCS, REG->TRIM, TCS->TRIM (-EINVAL);
    REG->TCS needs max prot RW (-EPERM), sets it to RW, takes the page off the active list
    (-EAGAIN), zaps PTEs without encl->lock, re-marks it; EMODT (fault -> -EFAULT; SGX code ->
    result, -EFAULT; both restore the max prot); ETRACK flow (-EFAULT); record the type.
    """
    page_type &= 0xFF
    if page_type not in (PageType.PT_TCS, PageType.PT_TRIM):
        return -U.EINVAL, 0, 0
    result = 0
    c = 0
    ret = 0
    while c < length:
        addr = encl.base + offset + c
        ret = _sgx2_page_guard(k, encl)
        if ret:
            break
        k.sgx_reclaim_direct()
        encl.lock.lock()
        try:
            ret = _load_for_sgx2(k, encl, addr)
            if ret:
                break
            pfn = addr >> PAGE_SHIFT
            pages = encl.pages
            typ = pages.type(pfn)
            if not (typ == PageType.PT_REG or (typ == PageType.PT_TCS and page_type == PageType.PT_TRIM)):
                ret = -U.EINVAL
                break
            max_prot_restore = pages.prot(pfn)
            if typ == PageType.PT_REG and page_type == PageType.PT_TCS:
                if ~pages.prot(pfn) & (VM_READ | VM_WRITE):
                    ret = -U.EPERM
                    break
                pages.set_prot(pfn, VM_READ | VM_WRITE)
                epc = pages.epc(pfn)
                if k.sgx_unmark_page_reclaimable(epc):
                    pages.set_prot(pfn, max_prot_restore)
                    ret = -U.EAGAIN
                    break
                # Do not hold encl->lock while taking mmap_lock in the zap.
                encl.lock.unlock()
                em.sgx_zap_enclave_ptes(encl, addr)
                encl.lock.lock()
                k.sgx_mark_page_reclaimable(epc)
            si = write_secinfo(k, em.secinfo_bytes(page_type << 8))
            r = E.emodt(k, si, pages.epc(pfn))
            if E.encls_faulted(r):
                k.pr_err_once("EMODT", "EMODT encountered exception %d", E.ENCLS_TRAPNR(r))
                pages.set_prot(pfn, max_prot_restore)
                ret = -U.EFAULT
                break
            if E.encls_failed(r):
                result = r
                pages.set_prot(pfn, max_prot_restore)
                ret = -U.EFAULT
                break
            if sgx_enclave_etrack(k, encl):
                ret = -U.EFAULT
                break
            pages.set_type(pfn, page_type)
        finally:
            encl.lock.unlock()
        c += PAGE_SIZE
    return ret, result, c


def sgx_ioc_enclave_modify_types(k: Kernel, encl: SgxEncl, arg: int) -> int:
    """Models: ioctl.c sgx_ioc_enclave_modify_types(): ready; copy; offset/length; page_type
    beyond bits 7:0 (-EINVAL); result or count non-zero (-EINVAL); modify; copy back."""
    ret = sgx_ioc_sgx2_ready(k, encl)
    if ret:
        return ret
    raw = copy_from_user(k, arg, _MOD.size)
    if raw is None:
        return -U.EFAULT
    offset, length, page_type, result, count = _MOD.unpack(raw)
    if sgx_validate_offset_length(encl, offset, length):
        return -U.EINVAL
    if page_type & ~0xFF:
        return -U.EINVAL
    if result or count:
        return -U.EINVAL
    try:
        ret, result, count = _with_epc_read(
            k, lambda: sgx_enclave_modify_types(k, encl, offset, length, page_type)
        )
    except _EarlyReturn as e:
        return e.ret
    if not copy_to_user(k, arg, _MOD.pack(offset, length, page_type, result & _U64, count)):
        return -U.EFAULT
    return ret


def sgx_encl_remove_pages(k: Kernel, encl: SgxEncl, offset: int, length: int) -> tuple[int, int]:
    """Remove accepted trimmed pages. Returns (ret, count).

    Models: ioctl.c sgx_encl_remove_pages(): per page reclaim_direct, load (-EAGAIN/-EFAULT),
    type must be TRIM (-EPERM), EMODPR(RWX) probe must #PF (an EACCEPTed trimmed page; anything
    else -> -EPERM), unmark (-EBUSY), zap PTEs without encl->lock, EREMOVE + free, count the
    child out, erase, shrink (VA pages are kept).
    """
    c = 0
    ret = 0
    secinfo = em.secinfo_bytes(int(SecinfoFlags.R | SecinfoFlags.W | SecinfoFlags.X))
    while c < length:
        addr = encl.base + offset + c
        ret = _sgx2_page_guard(k, encl)
        if ret:
            break
        k.sgx_reclaim_direct()
        encl.lock.lock()
        try:
            ret = _load_for_sgx2(k, encl, addr)
            if ret:
                break
            pfn = addr >> PAGE_SHIFT
            if encl.pages.type(pfn) != PageType.PT_TRIM:
                ret = -U.EPERM
                break
            epc = encl.pages.epc(pfn)
            r = E.emodpr(k, write_secinfo(k, secinfo), epc)
            if not E.encls_faulted(r) or E.ENCLS_TRAPNR(r) != E.X86_TRAP_PF:
                ret = -U.EPERM
                break
            if k.sgx_unmark_page_reclaimable(epc):
                ret = -U.EBUSY
                break
            encl.lock.unlock()
            em.sgx_zap_enclave_ptes(encl, addr)
            encl.lock.lock()
            k.sgx_encl_free_epc_page(epc)
            encl.secs_child_cnt -= 1
            encl.pages.set_epc(pfn, -1)
            encl.pages.erase(pfn)
            sgx_encl_shrink(encl, None)
        finally:
            encl.lock.unlock()
        c += PAGE_SIZE
    return ret, c


def sgx_ioc_enclave_remove_pages(k: Kernel, encl: SgxEncl, arg: int) -> int:
    """Models: ioctl.c sgx_ioc_enclave_remove_pages(): ready; copy; offset/length; count non-zero
    (-EINVAL); remove; copy back."""
    ret = sgx_ioc_sgx2_ready(k, encl)
    if ret:
        return ret
    raw = copy_from_user(k, arg, _REM.size)
    if raw is None:
        return -U.EFAULT
    offset, length, count = _REM.unpack(raw)
    if sgx_validate_offset_length(encl, offset, length):
        return -U.EINVAL
    if count:
        return -U.EINVAL
    try:
        ret, count = _with_epc_read(k, lambda: sgx_encl_remove_pages(k, encl, offset, length))
    except _EarlyReturn as e:
        return e.ret
    if not copy_to_user(k, arg, _REM.pack(offset, length, count)):
        return -U.EFAULT
    return ret


# ---------------------------------------------------------------------------------------
# Dispatcher


def sgx_ioctl(k: Kernel, file: File, cmd: int, arg: int) -> int:
    """The /dev/sgx_enclave ioctl entry point.

    Models: ioctl.c sgx_ioctl(): one ioctl at a time per enclave (test_and_set_bit of
    SGX_ENCL_IOCTL, else -EBUSY); unknown requests -> -ENOIOCTLCMD (user space sees ENOTTY).
    """
    encl = file.private_data
    assert isinstance(encl, SgxEncl)
    if encl.flags & SGX_ENCL_IOCTL:
        return -U.EBUSY
    encl.flags |= SGX_ENCL_IOCTL
    try:
        if encl.flags & SGX_ENCL_DEAD:
            # [MODEL fix] the enclave lost its EPC to an SVN update.
            return -U.EIO
        if cmd == U.SGX_IOC_ENCLAVE_CREATE:
            return sgx_ioc_enclave_create(k, encl, arg)
        if cmd == U.SGX_IOC_ENCLAVE_ADD_PAGES:
            return sgx_ioc_enclave_add_pages(k, encl, arg)
        if cmd == U.SGX_IOC_ENCLAVE_INIT:
            return sgx_ioc_enclave_init(k, encl, arg)
        if cmd == U.SGX_IOC_ENCLAVE_PROVISION:
            return sgx_ioc_enclave_provision(k, encl, arg)
        if cmd == U.SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS:
            return sgx_ioc_enclave_restrict_permissions(k, encl, arg)
        if cmd == U.SGX_IOC_ENCLAVE_MODIFY_TYPES:
            return sgx_ioc_enclave_modify_types(k, encl, arg)
        if cmd == U.SGX_IOC_ENCLAVE_REMOVE_PAGES:
            return sgx_ioc_enclave_remove_pages(k, encl, arg)
        return -U.ENOIOCTLCMD
    finally:
        encl.flags &= ~SGX_ENCL_IOCTL

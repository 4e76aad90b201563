"""Virtual EPC (/dev/sgx_vepc): raw EPC pages handed to KVM guests, and ENCLS on their behalf.

A vEPC instance maps EPC pages into the VMM's address space on first touch; the guest (issue 3b)
then runs ENCLS on them itself. Guest pages are never reclaimed. On release every page is
EREMOVE'd (children first, SECS pages in a second pass); SECS pages that still have children in
another instance become zombies and are retried whenever another instance is released.

This module deliberately does not import :mod:`sgxsim.kernel.encl` (virt.c never includes
encl.h); it reaches the allocator through :class:`~sgxsim.kernel.main.Kernel`.

Models: arch/x86/kernel/cpu/sgx/virt.c (Linux 6.x mainline + 6.19 usage count):
__sgx_vepc_fault / sgx_vepc_fault, sgx_vepc_mmap, sgx_vepc_remove_page, sgx_vepc_free_page,
sgx_vepc_remove_all (SGX_IOC_VEPC_REMOVE_ALL), sgx_vepc_release with zombie_secs_pages,
sgx_vepc_open, sgx_vepc_ioctl, sgx_vepc_init, sgx_virt_ecreate, sgx_virt_einit.
Differs: KVM passes host *virtual* addresses to sgx_virt_ecreate/einit and ENCLS translates
them through the VMM's page tables; here the kernel faults the pages in and translates them
(what the MMU would do) before issuing the leaf with physical operands.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from sgxsim.hw.arch import PAGE_SHIFT, PAGE_SIZE, EinitToken, SgxStatus, Sigstruct, Vector
from sgxsim.kernel import encls as E  # noqa: N812
from sgxsim.kernel import uapi as U  # noqa: N812
from sgxsim.kernel.fs import File, FileOperations, MiscDevice
from sgxsim.kernel.locking import Mutex, cond_resched
from sgxsim.kernel.mm import (
    FAULT_FLAG_ALLOW_RETRY,
    TASK_SIZE,
    VM_DONTCOPY,
    VM_DONTDUMP,
    VM_FAULT_NOPAGE,
    VM_FAULT_RETRY,
    VM_FAULT_SIGBUS,
    VM_IO,
    VM_PFNMAP,
    VM_SHARED,
    Vma,
    VmFault,
    _fault_in,
)
from sgxsim.kernel.sgx import EpcOwner

if TYPE_CHECKING:
    from sgxsim.kernel.main import Kernel

__all__ = [
    "SGX_VEPC_PATH",
    "SGX_VEPC_VM_OPS",
    "SgxVepc",
    "sgx_vepc_init",
    "sgx_vepc_remove_all",
    "sgx_virt_ecreate",
    "sgx_virt_einit",
]

SGX_VEPC_PATH = "/dev/sgx_vepc"


class SgxVepc:
    """``struct sgx_vepc``: EPC pages by page offset, and a lock."""

    def __init__(self, k: Kernel) -> None:
        self.k = k
        self.id = k.new_vepc_id()
        #: page_array: pgoff -> global EPC page index.
        self.page_array: dict[int, int] = {}
        self.lock = Mutex(k.sched, "vepc")
        k.vepcs[self.id] = self

    def __repr__(self) -> str:
        return f"SgxVepc(id={self.id}, pages={len(self.page_array)})"


def _sgx_vepc_fault(vepc: SgxVepc, vma: Vma, addr: int) -> int:
    """Allocate (no reclaim) and map the EPC page behind ``addr``.

    Models: virt.c __sgx_vepc_fault(). Outcomes: 0; -EBUSY / -ENOMEM from the allocator.
    """
    k = vepc.k
    index = vma.vm_pgoff + ((addr - vma.vm_start) >> PAGE_SHIFT)
    if index in vepc.page_array:
        # As Linux: an existing page is not re-inserted (a remapped offset refaults forever).
        return 0
    page = k.sgx_alloc_epc_page(EpcOwner.VEPC, vepc.id, index, False)
    if page < 0:
        return page
    vepc.page_array[index] = page
    vma.vm_mm.vmf_insert_pfn(vma, addr, k.phys(page) >> PAGE_SHIFT)
    return 0


def sgx_vepc_fault(vmf: VmFault) -> int:
    """Models: virt.c sgx_vepc_fault(). Outcomes: VM_FAULT_NOPAGE; VM_FAULT_RETRY (-EBUSY with
    FAULT_FLAG_ALLOW_RETRY); VM_FAULT_SIGBUS."""
    vma = vmf.vma
    vepc = vma.vm_private_data
    if not isinstance(vepc, SgxVepc):
        return VM_FAULT_SIGBUS
    k = vepc.k
    # RFC v2 patch 01: no guest page is handed out while an SVN update holds the EPC.
    idx = k.sgx_epc_read_lock()
    try:
        if k.sgx_epc_is_locked():
            k.count("vepc_faults_epc_locked")
            ret = -U.EBUSY
        else:
            vepc.lock.lock()
            ret = _sgx_vepc_fault(vepc, vma, vmf.address)
            vepc.lock.unlock()
    finally:
        k.sgx_epc_read_unlock(idx)
    if not ret:
        return VM_FAULT_NOPAGE
    if ret == -U.EBUSY and vmf.flags & FAULT_FLAG_ALLOW_RETRY:
        return VM_FAULT_RETRY
    return VM_FAULT_SIGBUS


class _SgxVepcVmOps:
    """``sgx_vepc_vm_ops``: fault only."""

    name = "sgx_vepc_vm_ops"

    def fault(self, vmf: VmFault) -> int:
        return sgx_vepc_fault(vmf)

    def open(self, vma: Vma) -> None:
        return None

    def mprotect(self, vma: Vma, start: int, end: int, newflags: int) -> int:
        return 0


#: The vEPC VMA operations (stateless).
SGX_VEPC_VM_OPS = _SgxVepcVmOps()


def sgx_vepc_remove_page(k: Kernel, page: int) -> int:
    """Unconditional EREMOVE (harmless on a page the guest already removed).

    Models: virt.c sgx_vepc_remove_page(). Outcomes: the kernel-encoded EREMOVE result.
    """
    return E.eremove(k, page)


def sgx_vepc_free_page(k: Kernel, page: int) -> int:
    """EREMOVE and free; only SGX_CHILD_PRESENT is an expected failure (else WARN_ONCE).

    Models: virt.c sgx_vepc_free_page(). Outcomes: 0 (freed) or the EREMOVE result (kept).
    """
    ret = sgx_vepc_remove_page(k, page)
    if ret:
        k.log.WARN_ONCE(
            "vepc EREMOVE",
            ret != SgxStatus.SGX_CHILD_PRESENT,
            E.EREMOVE_ERROR_MESSAGE,
            ret,
            ret,
            site="sgx_vepc_free_page",
        )
        return ret
    k.sgx_free_epc_page(page)
    return 0


def sgx_vepc_remove_all(k: Kernel, vepc: SgxVepc) -> int:
    """EREMOVE every page (pages stay allocated to the instance).

    Models: virt.c sgx_vepc_remove_all(). Outcomes: the number of SECS pages that still had
    children (user space must call again); -EBUSY on any other failure (SGX_ENCLAVE_ACT, #GP
    from a concurrent EREMOVE; a #PF WARNs).
    """
    guard = k.svn.encls_fence_begin()
    try:
        return _sgx_vepc_remove_all(k, vepc)
    finally:
        k.svn.encls_fence_end(guard)


def _sgx_vepc_remove_all(k: Kernel, vepc: SgxVepc) -> int:
    failures = 0
    for index in sorted(vepc.page_array):
        ret = sgx_vepc_remove_page(k, vepc.page_array[index])
        if ret:
            if ret == SgxStatus.SGX_CHILD_PRESENT:
                failures += 1
            else:
                k.log.WARN_ON_ONCE(
                    "vepc_remove_all",
                    E.encls_faulted(ret) and E.ENCLS_TRAPNR(ret) != E.X86_TRAP_GP,
                    site="sgx_vepc_remove_all",
                )
                return -U.EBUSY
        cond_resched(k.sched)
    return failures


def sgx_vepc_release(k: Kernel, vepc: SgxVepc) -> None:
    """Free every page: children first, SECS pages in a second pass, leftovers become zombies.

    Models: virt.c sgx_vepc_release(): pass 1 EREMOVE+free each page (failures kept); pass 2
    retry (a SECS still failing has children in another instance: zombie); then retry every
    zombie; remaining ones stay on zombie_secs_pages; drop the usage count (6.19).
    [MODEL fix] its EREMOVEs never overlap EUPDATESVN (see SgxSvn.encls_fence_begin).
    """
    guard = k.svn.encls_fence_begin()
    try:
        _sgx_vepc_release(k, vepc)
    finally:
        k.svn.encls_fence_end(guard)
    k.sgx_dec_usage_count()


def _sgx_vepc_release(k: Kernel, vepc: SgxVepc) -> None:
    lists = k.lists
    for index in sorted(vepc.page_array):
        if sgx_vepc_free_page(k, vepc.page_array[index]):
            continue
        del vepc.page_array[index]
        cond_resched(k.sched)
    secs_pages: list[int] = []
    for index in sorted(vepc.page_array):
        page = vepc.page_array[index]
        if sgx_vepc_free_page(k, page):
            secs_pages.append(page)
        del vepc.page_array[index]
        cond_resched(k.sched)
    k.zombie_secs_pages_lock.lock()
    for page in list(lists.iterate(k.zombie_secs_pages)):
        lists.del_init(page)
        if sgx_vepc_free_page(k, page):
            secs_pages.append(page)
        cond_resched(k.sched)
    for page in secs_pages:
        lists.add_tail(page, k.zombie_secs_pages)
    k.zombie_secs_pages_lock.unlock()
    k.vepcs.pop(vepc.id, None)


class SgxVepcFops(FileOperations):
    """``sgx_vepc_fops``."""

    name = "sgx_vepc_fops"

    def open(self, k: Kernel, file: File) -> int:
        """Models: virt.c sgx_vepc_open(): usage count (6.19), then a new instance."""
        ret = k.sgx_inc_usage_count()
        if ret:
            return ret
        file.private_data = SgxVepc(k)
        return 0

    def release(self, k: Kernel, file: File) -> None:
        vepc = file.private_data
        assert isinstance(vepc, SgxVepc)
        sgx_vepc_release(k, vepc)

    def ioctl(self, k: Kernel, file: File, cmd: int, arg: int) -> int:
        """Models: virt.c sgx_vepc_ioctl(): REMOVE_ALL (arg must be 0, else -EINVAL); -ENOTTY."""
        vepc = file.private_data
        assert isinstance(vepc, SgxVepc)
        if cmd == U.SGX_IOC_VEPC_REMOVE_ALL:
            if arg:
                return -U.EINVAL
            return sgx_vepc_remove_all(k, vepc)
        return -U.ENOTTY

    def mmap(self, k: Kernel, file: File, vma: Vma) -> int:
        """Models: virt.c sgx_vepc_mmap(): shared mappings only (-EINVAL), PFN map, not copied."""
        if not vma.vm_flags & VM_SHARED:
            return -U.EINVAL
        vma.vm_ops = SGX_VEPC_VM_OPS
        vma.vm_flags |= VM_PFNMAP | VM_IO | VM_DONTDUMP | VM_DONTCOPY
        vma.vm_private_data = file.private_data
        return 0


#: Stateless operation table.
SGX_VEPC_FOPS = SgxVepcFops()


def sgx_vepc_init(k: Kernel) -> int:
    """Register /dev/sgx_vepc when the CPU can run KVM. Models: virt.c sgx_vepc_init().
    Outcomes: 0 or -ENODEV."""
    if not k.config.vmx:
        return -U.ENODEV
    k.misc_devices[SGX_VEPC_PATH] = MiscDevice("sgx_vepc", SGX_VEPC_FOPS)
    return 0


def _access_ok(uaddr: int, size: int) -> bool:
    """Models: arch/x86/include/asm/uaccess_64.h access_ok(): the range only (below TASK_SIZE)."""
    return 0 <= uaddr <= TASK_SIZE - size


def _translate(k: Kernel, uaddr: int, write: bool) -> int | None:
    """The physical address ENCLS reaches through a user address of the current process.

    A kernel access inside __uaccess_begin(): a fixable fault is fixed by the fault handler and
    the access retried; an unfixable one (no VMA, a write to a read-only mapping, SIGBUS from a
    driver) reaches the ENCLS exception fixup. None means that #PF.
    """
    proc = k.current_proc
    if proc is None:
        return None
    if _fault_in(proc.mm, uaddr & ~(PAGE_SIZE - 1), write, user=False) != 0:
        return None
    pte = proc.mm.lookup(uaddr)
    if pte is None:
        return None
    return (pte.phys & ~(PAGE_SIZE - 1)) | (uaddr & (PAGE_SIZE - 1))


def sgx_virt_ecreate(k: Kernel, linaddr: int, contents: int, secinfo: int, secs: int) -> tuple[int, int]:
    """Run ECREATE for a guest: PAGEINFO{linaddr, contents, secinfo (user addresses)}, SECS =
    a user address inside a vEPC mapping. Returns (ret, trapnr).

    Models: virt.c sgx_virt_ecreate(): WARN_ON_ONCE(!access_ok(secs, PAGE_SIZE)) -> -EINVAL (a
    KVM bug: its HVAs come from memslots); then ECREATE, whose #PF on an unmapped or read-only
    operand reaches the exception fixup: (-EFAULT, 14) and KVM injects the fault (no WARN).
    Outcomes: (0, 0); (-EFAULT, trapnr); (-EINVAL, 0); the EPC-locked errno.
    """
    idx = k.sgx_epc_read_lock()
    try:
        if k.sgx_epc_is_locked():
            k.count("virt_ecreate_epc_locked")
            return -U.EBUSY, 0
        return _sgx_virt_ecreate(k, linaddr, contents, secinfo, secs)
    finally:
        k.sgx_epc_read_unlock(idx)


def _sgx_virt_ecreate(k: Kernel, linaddr: int, contents: int, secinfo: int, secs: int) -> tuple[int, int]:
    if k.log.WARN_ON_ONCE(
        "sgx_virt_ecreate:access_ok", not _access_ok(secs, PAGE_SIZE), site="sgx_virt_ecreate"
    ):
        return -U.EINVAL, 0
    src = _translate(k, contents, False)
    si = _translate(k, secinfo, False)
    secs_phys = _translate(k, secs, True)
    if src is None or si is None or secs_phys is None:
        # ECREATE's #PF on the user operand, caught by the ENCLS exception fixup.
        k.count("virt_encls_pf")
        return -U.EFAULT, int(Vector.PF)
    page = k.scratch_page()
    k.machine.dram.write(page, struct.pack("<QQQQ", linaddr, src, si, 0))
    idx = k.page_of(secs_phys)
    if idx is None:
        ret = E.encls_result(k.machine.encls(k.current_cpu(), 0, page, secs_phys, 0))
    else:
        ret = E.ecreate(k, page, idx)
    if E.encls_faulted(ret):
        return -U.EFAULT, E.ENCLS_TRAPNR(ret)
    k.log.WARN_ON_ONCE("sgx_virt_ecreate", ret, site="sgx_virt_ecreate")
    return 0, 0


def sgx_virt_einit(k: Kernel, sigstruct: int, token: int, secs: int, lepubkeyhash: bytes) -> tuple[int, int]:
    """Run EINIT for a guest with the guest's virtual LEPUBKEYHASH MSR values. Returns (ret, trapnr).

    Models: virt.c sgx_virt_einit(): with SGX_LC the MSRs are written (non-preemptible) before
    EINIT; the access_ok() range checks WARN and give -EINVAL (a KVM bug); an unmapped or
    read-only operand is EINIT's #PF, caught by the exception fixup: (-EFAULT, 14), no WARN.
    Outcomes: (0, 0); (SGX error code, 0); (-EFAULT, trapnr) if EINIT faulted; (-EINVAL, 0).
    """
    if k.log.WARN_ON_ONCE(
        "sgx_virt_einit:access_ok",
        not (
            _access_ok(sigstruct, Sigstruct.SIZE)
            and _access_ok(token, EinitToken.SIZE)
            and _access_ok(secs, PAGE_SIZE)
        ),
        site="sgx_virt_einit",
    ):
        return -U.EINVAL, 0
    sig = _translate(k, sigstruct, False)
    tok = _translate(k, token, False)
    secs_phys = _translate(k, secs, True)
    if sig is None or tok is None or secs_phys is None:
        k.count("virt_encls_pf")
        return -U.EFAULT, int(Vector.PF)
    cpu = k.current_cpu()
    if k.config.sgx_lc:
        k.sgx_update_lepubkeyhash(cpu, lepubkeyhash)
    idx = k.page_of(secs_phys)
    guard = k.svn.encls_fence_begin()  # [MODEL fix] never beside EUPDATESVN
    try:
        if idx is None:
            ret = E.encls_result(k.machine.encls(cpu, 2, sig, secs_phys, tok))
        else:
            ret = E.einit(k, sig, idx, tok)
    finally:
        k.svn.encls_fence_end(guard)
    if E.encls_faulted(ret):
        return -U.EFAULT, E.ENCLS_TRAPNR(ret)
    return ret, 0

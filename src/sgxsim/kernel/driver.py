"""The misc devices /dev/sgx_enclave and /dev/sgx_provision: open, release, mmap, ioctl.

Models: arch/x86/kernel/cpu/sgx/driver.c (sgx_open, sgx_release, sgx_mmap,
sgx_get_unmapped_area, sgx_drv_init with the reserved masks from CPUID); Linux 6.19's SGX usage
count (sgx_inc_usage_count on open, dropped when the enclave is released). The main.c part for
/dev/sgx_provision lives in :mod:`sgxsim.kernel.provision` (re-exported here).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sgxsim.hw.arch import (
    SGX_ATTR_PRIV_MASK,
    SGX_ATTR_RESERVED_MASK,
    SGX_CPUID,
    SGX_MISC_RESERVED_MASK,
)
from sgxsim.kernel import encl as em
from sgxsim.kernel import uapi as U  # noqa: N812
from sgxsim.kernel.fs import File, FileOperations, MiscDevice
from sgxsim.kernel.ioctl import sgx_ioctl
from sgxsim.kernel.mm import VM_DONTDUMP, VM_DONTEXPAND, VM_IO, VM_PFNMAP, Vma
from sgxsim.kernel.provision import (
    SGX_PROVISION_FOPS,
    SGX_PROVISION_PATH,
    SgxProvisionFops,
    register_provision,
    sgx_set_attribute,
)

if TYPE_CHECKING:
    from sgxsim.kernel.main import Kernel

__all__ = [
    "SGX_ENCLAVE_PATH",
    "SGX_ENCL_FOPS",
    "SGX_PROVISION_FOPS",
    "SGX_PROVISION_PATH",
    "MiscDevice",
    "SgxEnclaveFops",
    "SgxProvisionFops",
    "register_provision",
    "sgx_drv_init",
    "sgx_set_attribute",
]

SGX_ENCLAVE_PATH = "/dev/sgx_enclave"
_U64 = (1 << 64) - 1


class SgxEnclaveFops(FileOperations):
    """``sgx_encl_fops``."""

    name = "sgx_encl_fops"

    def open(self, k: Kernel, file: File) -> int:
        """Models: driver.c sgx_open(): count the SGX user (6.19), allocate the enclave.
        Outcomes: 0, or the usage-count hook's -errno."""
        ret = k.sgx_inc_usage_count()
        if ret:
            return ret
        file.private_data = em.SgxEncl(k)
        return 0

    def release(self, k: Kernel, file: File) -> None:
        """Drain the mm_list (each entry drops a reference), then drop the file's reference.

        Models: driver.c sgx_release().
        """
        encl = file.private_data
        assert isinstance(encl, em.SgxEncl)
        while True:
            encl.mm_lock.lock()
            encl_mm = encl.mm_list.pop(0) if encl.mm_list else None
            encl.mm_lock.unlock()
            if encl_mm is None:
                break
            encl.srcu.synchronize_srcu()
            encl_mm.unregister()
            encl.refcount.kref_put(em.sgx_encl_release_kref)
        encl.refcount.kref_put(em.sgx_encl_release_kref)

    def ioctl(self, k: Kernel, file: File, cmd: int, arg: int) -> int:
        return sgx_ioctl(k, file, cmd, arg)

    def mmap(self, k: Kernel, file: File, vma: Vma) -> int:
        """Models: driver.c sgx_mmap(): sgx_encl_may_map (-EACCES), sgx_encl_mm_add, sgx_vm_ops,
        VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP | VM_IO."""
        encl = file.private_data
        assert isinstance(encl, em.SgxEncl)
        ret = em.sgx_encl_may_map(encl, vma.vm_start, vma.vm_end, vma.vm_flags)
        if ret:
            return ret
        ret = em.sgx_encl_mm_add(encl, vma.vm_mm)
        if ret:
            return ret
        vma.vm_ops = em.SGX_VM_OPS
        vma.vm_flags |= VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP | VM_IO
        vma.vm_private_data = encl
        return 0

    def get_unmapped_area(
        self, k: Kernel, file: File, addr: int, length: int, pgoff: int, flags: int
    ) -> int | None:
        """Models: driver.c sgx_get_unmapped_area(): MAP_PRIVATE -> -EINVAL; MAP_FIXED -> addr."""
        if flags & U.MAP_TYPE == U.MAP_PRIVATE:
            return -U.EINVAL
        if flags & U.MAP_FIXED:
            return addr
        return None


#: Stateless operation table.
SGX_ENCL_FOPS = SgxEnclaveFops()


def sgx_drv_init(k: Kernel) -> int:
    """Register /dev/sgx_enclave if flexible launch control and SGX1 exist; compute the masks.

    Models: driver.c sgx_drv_init(): ``sgx_misc_reserved_mask = ~EBX(0) | SGX_MISC_RESERVED_MASK``,
    ``sgx_attributes_reserved_mask = ~(EAX | EBX << 32)(1) | SGX_ATTR_RESERVED_MASK``,
    ``sgx_xfrm_reserved_mask = ~(ECX | EDX << 32)(1)`` with OSXSAVE (else ``~0x3``).
    Outcomes: 0 or -ENODEV.
    """
    if not k.config.sgx_lc:
        k.log.pr_info(
            "SGX disabled: SGX launch control CPU feature is not available, /dev/sgx_enclave disabled."
        )
        return -U.ENODEV
    eax, ebx, _ecx, _edx = k.machine.cpuid(SGX_CPUID, 0)
    if not eax & 1:
        k.log.pr_info("SGX disabled: SGX1 instruction support not available, /dev/sgx_enclave disabled.")
        return -U.ENODEV
    k.sgx_misc_reserved_mask = (~ebx & 0xFFFF_FFFF) | (SGX_MISC_RESERVED_MASK & 0xFFFF_FFFF)
    eax, ebx, ecx, edx = k.machine.cpuid(SGX_CPUID, 1)
    attr_mask = (ebx << 32) | eax
    k.sgx_attributes_reserved_mask = (~attr_mask & _U64) | SGX_ATTR_RESERVED_MASK
    if k.config.osxsave:
        k.sgx_xfrm_reserved_mask = ~((edx << 32) | ecx) & _U64
    k.misc_devices[SGX_ENCLAVE_PATH] = MiscDevice("sgx_enclave", SGX_ENCL_FOPS)
    return 0


#: The privileged attributes (kept for callers that show the policy).
PRIVILEGED_ATTRIBUTES = SGX_ATTR_PRIV_MASK

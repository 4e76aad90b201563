"""/dev/sgx_provision: the capability file whose fd lets an enclave have PROVISIONKEY.

Models: arch/x86/kernel/cpu/sgx/main.c (sgx_provision_fops, sgx_dev_provision registered in
sgx_init(), sgx_set_attribute()). Linux keeps these in main.c; here they sit below ioctl.c's
SGX_IOC_ENCLAVE_PROVISION, which calls sgx_set_attribute(), so the import graph stays acyclic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sgxsim.hw.arch import Attributes
from sgxsim.kernel import uapi as U  # noqa: N812
from sgxsim.kernel.fs import FileOperations, MiscDevice

if TYPE_CHECKING:
    from sgxsim.kernel.main import Kernel

__all__ = [
    "SGX_PROVISION_FOPS",
    "SGX_PROVISION_PATH",
    "SgxProvisionFops",
    "register_provision",
    "sgx_set_attribute",
]

SGX_PROVISION_PATH = "/dev/sgx_provision"


class SgxProvisionFops(FileOperations):
    """``sgx_provision_fops``: no operations; the open file is a capability token."""

    name = "sgx_provision_fops"


#: Stateless operation table.
SGX_PROVISION_FOPS = SgxProvisionFops()


def sgx_set_attribute(k: Kernel, allowed_attributes: int, attribute_fd: int) -> tuple[int, int]:
    """Allow an attribute given an fd of its device: only /dev/sgx_provision -> PROVISIONKEY.

    Models: main.c sgx_set_attribute(). Outcomes: (0, mask | PROVISIONKEY) or (-EINVAL, mask)
    for a closed fd or a file that is not /dev/sgx_provision.
    """
    proc = k.current_proc
    file = proc.fds.get(attribute_fd) if proc is not None else None
    if file is None or file.f_op is not SGX_PROVISION_FOPS:
        return -U.EINVAL, allowed_attributes
    return 0, allowed_attributes | int(Attributes.PROVISIONKEY)


def register_provision(k: Kernel) -> None:
    """Models: main.c sgx_init() misc_register(&sgx_dev_provision)."""
    k.misc_devices[SGX_PROVISION_PATH] = MiscDevice("sgx_provision", SGX_PROVISION_FOPS)

"""ENCLS wrappers with the kernel's result encoding, and the helpers Linux uses to read it.

Each wrapper issues one leaf on the current task's CPU as ``encls_begin`` / a preemption point
named ``"encls_begin:<LEAF>"`` / ``encls_exec`` / ``encls_end`` / ``"encls_end:<LEAF>"``, and
returns what the kernel's ``__encls_*`` macros return: 0 on success, the positive SGX return
code (RAX) for a leaf that reported an error or information code, or
``trapnr | SGX_ENCLS_FAULT_FLAG`` if the instruction faulted (#GP = 13, #PF = 14).

Operands are what encls.h passes: structures by (DRAM) address, EPC pages by their address.
The wrappers take EPC pages as global page indices and turn them into physical addresses.

Models: arch/x86/kernel/cpu/sgx/encls.h (ENCLS_FAULT_FLAG, ENCLS_TRAPNR, encls_faulted,
encls_failed, ENCLS_WARN, __ecreate, __eextend, __eadd, __einit, __eremove, __edbgwr,
__edbgrd, __etrack, __eldu, __eblock, __epa, __ewb, __emodpr, __emodt, __eaug, __eupdatesvn),
sgx.h EREMOVE_ERROR_MESSAGE.
Differs: Python mangles ``__name`` inside classes, so the primary names have no leading
underscores (``ecreate``...); the encls.h spellings (``__ecreate``...) are module aliases.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from sgxsim.hw import encls as hw_encls
from sgxsim.hw.arch import EnclsLeaf, Fault, LeafResult, PageType, SgxStatus

if TYPE_CHECKING:
    from sgxsim.kernel.main import Kernel

__all__ = [
    "ENCLS_TRAPNR",
    "ENCLS_WARN",
    "EREMOVE_ERROR_MESSAGE",
    "SGX_ENCLS_FAULT_FLAG",
    "eadd",
    "eaug",
    "eblock",
    "ecreate",
    "edbgrd",
    "edbgwr",
    "eextend",
    "einit",
    "eldu",
    "emodpr",
    "emodt",
    "encls_failed",
    "encls_faulted",
    "encls_result",
    "epa",
    "eremove",
    "eremove_many",
    "etrack",
    "eupdatesvn",
    "ewb",
]

#: Set in a wrapper's result when the leaf faulted; the low bits hold the trap number.
SGX_ENCLS_FAULT_FLAG = 0x40000000

X86_TRAP_GP = 13
X86_TRAP_PF = 14

#: sgx.h: the WARN text when EREMOVE fails and a page is leaked.
EREMOVE_ERROR_MESSAGE = (
    "EREMOVE returned %d (0x%x) and an EPC page was leaked. SGX may become unusable. "
    "Refer to Documentation/arch/x86/sgx.rst for more information."
)


def ENCLS_TRAPNR(r: int) -> int:  # noqa: N802 - the kernel macro's name
    """The trap number of a faulted result."""
    return r & ~SGX_ENCLS_FAULT_FLAG


def encls_faulted(ret: int) -> bool:
    """True iff the leaf faulted. Models: encls.h encls_faulted()."""
    return bool(ret & SGX_ENCLS_FAULT_FLAG)


def encls_failed(ret: int) -> bool:
    """True for a fault other than #PF, or any non-zero SGX code (an EPCM #PF is "expected").

    Models: encls.h encls_failed().
    """
    if encls_faulted(ret):
        return ENCLS_TRAPNR(ret) != X86_TRAP_PF
    return ret != 0


def ENCLS_WARN(k: Kernel, r: int, name: str) -> None:  # noqa: N802
    """WARN_ONCE("%s returned %d (0x%x)") keyed by the leaf name. Models: encls.h ENCLS_WARN()."""
    k.log.WARN_ONCE(f"ENCLS_WARN:{name}", r, "%s returned %d (0x%x)", name, r, r, site=name)


def encls_result(res: LeafResult) -> int:
    """The kernel's encoding of a leaf outcome: 0, the SGX code, or trapnr | fault flag."""
    if isinstance(res, Fault):
        return res.vector | SGX_ENCLS_FAULT_FLAG
    return int(res)


#: The scheduler's preemption-point names around each leaf (built once, not per call).
_BEGIN_POINT: Mapping[EnclsLeaf, str] = MappingProxyType({lf: f"encls_begin:{lf.name}" for lf in EnclsLeaf})
_END_POINT: Mapping[EnclsLeaf, str] = MappingProxyType({lf: f"encls_end:{lf.name}" for lf in EnclsLeaf})


def _encls(k: Kernel, leaf: EnclsLeaf, rbx: int = 0, rcx: int = 0, rdx: int = 0) -> int:
    m = k.machine
    cpu = k.current_cpu()
    m.encls_begin(cpu, leaf)
    k.sched.preempt(_BEGIN_POINT[leaf])
    try:
        res = m.encls_exec(cpu, leaf, rbx, rcx, rdx)
    finally:
        m.encls_end(cpu)
    k.sched.preempt(_END_POINT[leaf])
    return encls_result(res)


def ecreate(k: Kernel, pginfo: int, secs_page: int) -> int:
    """ECREATE(RBX = PAGEINFO, RCX = SECS page). Outcomes: 0 or a fault."""
    return _encls(k, EnclsLeaf.ECREATE, pginfo, k.phys(secs_page))


def eextend(k: Kernel, secs_page: int, page: int, offset: int) -> int:
    """EEXTEND(RBX = SECS, RCX = page + offset of a 256-byte chunk). Outcomes: 0 or a fault."""
    return _encls(k, EnclsLeaf.EEXTEND, k.phys(secs_page), k.phys(page) + offset)


def eadd(k: Kernel, pginfo: int, page: int) -> int:
    """EADD(RBX = PAGEINFO, RCX = page). Outcomes: 0 or a fault."""
    return _encls(k, EnclsLeaf.EADD, pginfo, k.phys(page))


def einit(k: Kernel, sigstruct: int, secs_page: int, token: int) -> int:
    """EINIT(RBX = SIGSTRUCT, RCX = SECS, RDX = EINITTOKEN). Outcomes: 0, an SGX code, a fault."""
    return _encls(k, EnclsLeaf.EINIT, sigstruct, k.phys(secs_page), token)


def eremove(k: Kernel, page: int) -> int:
    """EREMOVE(RCX = page). Outcomes: 0, SGX_CHILD_PRESENT, SGX_ENCLAVE_ACT, a fault."""
    return _encls(k, EnclsLeaf.EREMOVE, 0, k.phys(page))


def edbgrd(k: Kernel, page: int, offset: int) -> tuple[int, int]:
    """EDBGRD(RCX = page + offset): (result, the 8 bytes read as an int, 0 on failure)."""
    ret = _encls(k, EnclsLeaf.EDBGRD, 0, k.phys(page) + offset)
    data = int(getattr(k.machine.cpus[k.current_cpu()], "encls_rbx", 0)) if ret == 0 else 0
    return ret, data


def edbgwr(k: Kernel, page: int, offset: int, data: int) -> int:
    """EDBGWR(RBX = data, RCX = page + offset). Outcomes: 0, SGX_PAGE_NOT_DEBUGGABLE, a fault."""
    return _encls(k, EnclsLeaf.EDBGWR, data, k.phys(page) + offset)


def etrack(k: Kernel, secs_page: int) -> int:
    """ETRACK(RCX = SECS). Outcomes: 0, SGX_PREV_TRK_INCMPL, a fault."""
    return _encls(k, EnclsLeaf.ETRACK, 0, k.phys(secs_page))


def eldu(k: Kernel, pginfo: int, page: int, va_page: int, va_offset: int) -> int:
    """ELDU(RBX = PAGEINFO, RCX = page, RDX = VA slot). Outcomes: 0, SGX_MAC_COMPARE_FAIL, a fault."""
    return _encls(k, EnclsLeaf.ELDU, pginfo, k.phys(page), k.phys(va_page) + va_offset)


def eblock(k: Kernel, page: int) -> int:
    """EBLOCK(RCX = page). Outcomes: 0, an SGX code (BLKSTATE, NOTBLOCKABLE, ...), a fault."""
    return _encls(k, EnclsLeaf.EBLOCK, 0, k.phys(page))


def epa(k: Kernel, page: int) -> int:
    """EPA(RBX = PT_VA, RCX = page). Outcomes: 0 or a fault."""
    return _encls(k, EnclsLeaf.EPA, int(PageType.PT_VA), k.phys(page))


def ewb(k: Kernel, pginfo: int, page: int, va_page: int, va_offset: int) -> int:
    """EWB(RBX = PAGEINFO, RCX = page, RDX = VA slot). Outcomes: 0, an SGX code, a fault."""
    return _encls(k, EnclsLeaf.EWB, pginfo, k.phys(page), k.phys(va_page) + va_offset)


def emodpr(k: Kernel, secinfo: int, page: int) -> int:
    """EMODPR(RBX = SECINFO, RCX = page). Outcomes: 0, an SGX code, a fault."""
    return _encls(k, EnclsLeaf.EMODPR, secinfo, k.phys(page))


def emodt(k: Kernel, secinfo: int, page: int) -> int:
    """EMODT(RBX = SECINFO, RCX = page). Outcomes: 0, an SGX code, a fault."""
    return _encls(k, EnclsLeaf.EMODT, secinfo, k.phys(page))


def eaug(k: Kernel, pginfo: int, page: int) -> int:
    """EAUG(RBX = PAGEINFO, RCX = page). Outcomes: 0 or a fault."""
    return _encls(k, EnclsLeaf.EAUG, pginfo, k.phys(page))


def eupdatesvn(k: Kernel) -> int:
    """EUPDATESVN (no operands). Outcomes: 0, SGX_NO_UPDATE, SGX_INSUFFICIENT_ENTROPY, a code, a fault."""
    return _encls(k, EnclsLeaf.EUPDATESVN)


def eremove_many(k: Kernel, pages: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """EREMOVE each page in order; per-page kernel-encoded results (hardware batch path).

    Equivalent to ``[eremove(k, p) for p in pages]`` (the hardware batch gives identical
    results); one preemption point pair for the whole run.
    """
    if len(pages) == 0:
        return np.zeros(0, dtype=np.int64)
    phys = phys_many(k, pages)
    k.sched.preempt("encls_begin:EREMOVE")
    status = hw_encls.eremove_batch(k.machine, k.current_cpu(), phys)
    k.sched.preempt("encls_end:EREMOVE")
    out = status.astype(np.int64)
    faulted = np.flatnonzero(status == hw_encls.BATCH_FAULT)
    for i in faulted.tolist():
        out[i] = encls_result(hw_encls.decode_batch_status(k.machine, int(phys[i]), int(status[i])))
    return out


def phys_many(k: Kernel, pages: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Vectorized :meth:`Kernel.phys`."""
    pages = np.asarray(pages, dtype=np.int64)
    out = np.zeros(len(pages), dtype=np.int64)
    for s in k.sgx_epc_sections:
        sel = (pages >= s.first_page) & (pages < s.first_page + s.npages)
        out[sel] = s.phys_addr + ((pages[sel] - s.first_page) << 12)
    return out


def status_name(ret: int) -> str:
    """A readable name for a wrapper result (for logs and test messages)."""
    if encls_faulted(ret):
        return f"fault(trap {ENCLS_TRAPNR(ret)})"
    try:
        return SgxStatus(ret).name
    except ValueError:
        return str(ret)


# encls.h spellings.
__ecreate = ecreate
__eextend = eextend
__eadd = eadd
__einit = einit
__eremove = eremove
__edbgrd = edbgrd
__edbgwr = edbgwr
__etrack = etrack
__eldu = eldu
__eblock = eblock
__epa = epa
__ewb = ewb
__emodpr = emodpr
__emodt = emodt
__eaug = eaug
__eupdatesvn = eupdatesvn

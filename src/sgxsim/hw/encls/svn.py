"""EUPDATESVN: the SVN update after a late microcode load.

Models: ENCLS[EUPDATESVN] as Intel's "Runtime Microcode Updates with Intel Software Guard
Extensions" (cdrdv2 648682) describes it; Linux 6.19 ``sgx_update_svn`` for its use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sgxsim.errors import ModelInvariantError
from sgxsim.hw.arch import (
    CPUSVN_SIZE,
    LeafResult,
    SgxStatus,
    cpusvn_le,
)
from sgxsim.hw.cpu import LogicalProcessor
from sgxsim.hw.encls.common import _SUCCESS, _regs_ok
from sgxsim.hw.enclu import drop_tcs_threads

if TYPE_CHECKING:
    from sgxsim.hw.machine import Machine

__all__ = [
    "eupdatesvn",
]


def eupdatesvn(m: Machine, lp: LogicalProcessor, rbx: int, rcx: int, rdx: int) -> LeafResult:
    """Refresh the paging key and raise CR_CPUSVN to the minimum SVN of the loaded microcode.

    Models: Intel "Runtime Microcode Updates with Intel SGX" (cdrdv2 648682) EUPDATESVN pseudo-code
    as quoted on LKML (eupdatesvn-linux.md §4), in its order: another logical processor has an
    ENCLS leaf in flight -> SGX_LOCKFAIL (code 7); any valid EPCM entry -> SGX_EPC_NOT_READY;
    RDSEED of 16 bytes fails -> SGX_INSUFFICIENT_ENTROPY; else CR_BASE_PK := the 16 bytes and
    CR_CPUSVN := the component-wise minimum SVN over all logical processors: SUCCESS if it
    changed, SGX_NO_UPDATE (CF=1) if not. CPUSVN never decreases (ModelInvariantError otherwise).
    [MODEL] pages evicted under the old key can never be loaded again, so their kept SECS state
    and suspended threads are dropped.
    Outcomes: SUCCESS, SGX_NO_UPDATE, SGX_LOCKFAIL, SGX_EPC_NOT_READY, SGX_INSUFFICIENT_ENTROPY.
    """
    _regs_ok(rbx, rcx, rdx)
    if any(other.inflight is not None for other in m.cpus if other is not lp):
        return SgxStatus.SGX_LOCKFAIL
    if m.epc.epcm.valid.any():
        return SgxStatus.SGX_EPC_NOT_READY
    fresh_key = m.entropy.rdseed(16)
    if fresh_key is None:
        return SgxStatus.SGX_INSUFFICIENT_ENTROPY
    m.cr_base_pk = fresh_key
    m.evicted_secs.clear()
    for key in [k for k in m.tcs_threads if k < 0]:
        drop_tcs_threads(m, key)
    old = m.cpusvn
    new = m.min_loaded_svn()
    if len(new) != CPUSVN_SIZE or not cpusvn_le(old, new):
        raise ModelInvariantError(f"EUPDATESVN would lower CPUSVN from {old.hex()} to {new.hex()}")
    m.cr_cpusvn = new
    return _SUCCESS if new != old else SgxStatus.SGX_NO_UPDATE

"""EREMOVE and its batch path (property-tested equal to page-by-page EREMOVE).

Models: Intel SDM Vol. 3D ch. 38 ENCLS[EREMOVE].
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from sgxsim.errors import InvalidArgument, ModelInvariantError
from sgxsim.hw.arch import (
    EnclsLeaf,
    Fault,
    LeafResult,
    SgxStatus,
    Vector,
    gp0,
)
from sgxsim.hw.cpu import LogicalProcessor
from sgxsim.hw.encls.batching import (
    BoolArray,
    I64Array,
    _as_addr_array,
    _batch_account,
    _batch_begin,
    _drop_contents,
    _first_occurrence,
    _indices_of,
)
from sgxsim.hw.encls.common import (
    _PAGE_MASK,
    _PT_SECS,
    _PT_TRIM,
    _PT_VA,
    _SUCCESS,
    _clear_entry,
    _pf,
    _regs_ok,
    _secs_of_child,
)
from sgxsim.hw.enclu import drop_tcs_threads
from sgxsim.hw.epc import Epcm

if TYPE_CHECKING:
    from sgxsim.hw.machine import Machine

__all__ = [
    "BATCH_FAULT",
    "BATCH_UD",
    "decode_batch_status",
    "eremove",
    "eremove_batch",
]


#: Value :func:`eremove_batch` stores for a page whose EREMOVE raised a fault.
BATCH_FAULT = -1
#: Value :func:`eremove_batch` stores for every page of a batch issued in enclave mode (#UD).
BATCH_UD = -2


def _remove_page(m: Machine, idx: int) -> None:
    """Invalidate a page and drop what the model keeps beside it (contents, TCS thread)."""
    m.epc.contents.pop(idx, None)
    if idx in m.tcs_threads:
        drop_tcs_threads(m, idx)
    _clear_entry(m.epc.epcm, idx)


def _eremove_index(m: Machine, idx: int) -> SgxStatus:
    """EREMOVE of the EPC page ``idx`` after the operand checks."""
    e = m.epc.epcm
    if not e.valid[idx]:
        return _SUCCESS
    pt = int(e.pt[idx])
    if pt == _PT_VA:
        _remove_page(m, idx)
        return _SUCCESS
    if pt == _PT_SECS:
        state = m.epc.secs_state.get(idx)
        if state is not None and (state.child_count or state.virt_child_count):
            return SgxStatus.SGX_CHILD_PRESENT
        m.epc.secs_state.pop(idx, None)
        _remove_page(m, idx)
        return _SUCCESS
    state = _secs_of_child(m, idx)
    if not (pt == _PT_TRIM and not e.modified[idx]) and state.inside:
        return SgxStatus.SGX_ENCLAVE_ACT
    _remove_page(m, idx)
    state.child_count -= 1
    return _SUCCESS


def eremove(m: Machine, lp: LogicalProcessor, rbx: int, rcx: int, rdx: int) -> LeafResult:
    """Remove a page from the EPC (free its EPCM entry).

    Models: SDM ENCLS[EREMOVE] (RCX = EPC page); order: alignment (#GP), EPC membership (#PF);
    invalid page -> SUCCESS (nothing to do); PT_VA and trimmed-unmodified pages -> freed; PT_SECS
    with a child page (or VIRTCHILDCNT) -> SGX_CHILD_PRESENT, else freed; other types with any
    logical processor executing in the enclave -> SGX_ENCLAVE_ACT, else freed.
    Outcomes: SUCCESS, SGX_CHILD_PRESENT, SGX_ENCLAVE_ACT, #GP(0), #PF(RCX).
    Differs: a PT_TRIM page with MODIFIED = 0 is freed (VALID := 0): the SDM pseudo-code's first
    "nothing to do" test also catches it, which would make an EACCEPTed trimmed page impossible to
    free, contradicting Linux's SGX_IOC_ENCLAVE_REMOVE_PAGES.
    """
    _regs_ok(rbx, rcx, rdx)
    if rcx & _PAGE_MASK:
        return gp0()
    idx = m.epc.index_of(rcx)
    if idx is None:
        return _pf(rcx)
    return _eremove_index(m, idx)


def eremove_batch(m: Machine, cpu: int, epc_phys: npt.NDArray[np.integer]) -> npt.NDArray[np.int32]:
    """EREMOVE every page of ``epc_phys`` as one in-flight ENCLS; per-page outcome codes.

    Returns an int32 array: the :class:`SgxStatus` of each page's EREMOVE, or
    :data:`BATCH_FAULT` (-1) where it raised a fault (decode with :func:`decode_batch_status`).
    Every page is attempted (a failure does not stop the batch), in order, with results equal to
    page-by-page EREMOVE: REG/TCS/TRIM/VA/invalid pages are handled with numpy; SECS pages and
    repeated pages take the one-page path in their position, so a SECS after its children sees
    them gone. Charges the EREMOVE latency per page.
    Models: repeated SDM ENCLS[EREMOVE] (Linux sgx_encl_release / __sgx_sanitize_pages /
    sgx_vepc_remove_all). Outcomes per page: as :func:`eremove`.
    """
    arr = _as_addr_array("epc_phys", epc_phys)
    n = int(arr.size)
    out = np.zeros(n, dtype=np.int32)
    if n == 0:
        return out
    leaf = EnclsLeaf.EREMOVE
    lp, gate = _batch_begin(m, cpu, leaf)
    try:
        if gate is not None:
            out[:] = BATCH_UD if gate.vector == Vector.UD else BATCH_FAULT
            _batch_account(m, lp, leaf, n, 0)
            return out
        _eremove_batch_body(m, arr, out)
        _batch_account(m, lp, leaf, n, n)
        return out
    finally:
        m.encls_end(cpu)


def _eremove_batch_body(m: Machine, arr: I64Array, out: npt.NDArray[np.int32]) -> None:
    epc = m.epc
    e = epc.epcm
    idx, in_epc = _indices_of(epc, arr)
    misaligned = arr & _PAGE_MASK
    ok = in_epc & (misaligned == 0) if misaligned.any() else in_epc
    all_ok = bool(ok.all())
    if all_ok:
        safe = idx
    else:
        out[~ok] = BATCH_FAULT
        safe = np.where(ok, idx, 0)
    # Gathered once and shared with the vector path.
    valid = e.valid[safe]
    pt = e.pt[safe]
    # Entries taking the one-page path, in order: valid SECS pages and repeats of an index.
    special = valid & (pt == _PT_SECS)
    increasing = arr.size < 2 or bool(np.all(idx[1:] > idx[:-1]))
    if not increasing:
        special |= ~_first_occurrence(idx, ok)
    if not all_ok:
        special &= ok
    if all_ok and not special.any():
        # The common case (Linux tears an enclave down child page by child page): one segment.
        _eremove_vector(m, idx, None, out, valid, pt, contiguous=increasing and _is_range(idx))
        return
    plain = ok & ~special
    bounds = [0, *(np.flatnonzero(special) + 1).tolist()]
    if bounds[-1] != arr.size:
        bounds.append(int(arr.size))
    for start, stop in itertools.pairwise(bounds):
        seg_stop = stop - 1 if special[stop - 1] else stop
        seg = np.flatnonzero(plain[start:seg_stop]) + start
        if seg.size:
            _eremove_vector(m, idx[seg], seg, out, valid[seg], pt[seg])
        if seg_stop != stop:
            out[stop - 1] = int(_eremove_index(m, int(idx[stop - 1])))


def _is_range(ids: I64Array) -> bool:
    """True iff strictly increasing ``ids`` are consecutive (a slice can stand for them)."""
    return ids.size > 0 and int(ids[-1]) - int(ids[0]) == ids.size - 1


def _eremove_vector(
    m: Machine,
    ids: I64Array,
    pos: I64Array | None,
    out: npt.NDArray[np.int32],
    valid: BoolArray,
    pt: npt.NDArray[np.uint8],
    *,
    contiguous: bool = False,
) -> None:
    """EREMOVE distinct non-SECS pages ``ids`` (batch positions ``pos``; None = all) with numpy.

    ``valid`` and ``pt`` are the EPCM fields already gathered at ``ids``; ``contiguous`` says the
    ids are one increasing run, so the EPCM is cleared through a slice instead of an index array.
    ``out`` holds SUCCESS (0) at ``pos`` on entry.
    """
    e = m.epc.epcm
    is_va = valid & (pt == _PT_VA)
    child = valid & ~is_va
    owner_all = e.secs[ids]
    active_secs = [k for k, st in m.epc.secs_state.items() if st.inside]
    removed_child = child
    gone_mask = valid
    if active_secs:
        quiet_trim = child & (pt == _PT_TRIM) & ~e.modified[ids]
        busy = child & ~quiet_trim & np.isin(owner_all, np.array(active_secs, dtype=np.int32))
        if busy.any():
            out[busy.nonzero()[0] if pos is None else pos[busy]] = int(SgxStatus.SGX_ENCLAVE_ACT)
            removed_child = child & ~busy
            gone_mask = valid & ~busy
    owner_of = owner_all[removed_child]
    if owner_of.size and owner_of.min() == owner_of.max():  # one enclave: no sort needed
        owners, counts = owner_of[:1], np.array([owner_of.size])
    else:
        owners, counts = np.unique(owner_of, return_counts=True)
    for owner, count in zip(owners.tolist(), counts.tolist(), strict=True):
        state = m.epc.secs_state.get(int(owner))
        if state is None:
            raise ModelInvariantError(f"EPC pages are children of {owner}, which has no SECS state")
        state.child_count -= int(count)
    every = bool(gone_mask.all())
    gone = ids if every else ids[gone_mask]
    if not gone.size:
        return
    where: I64Array | slice = slice(int(ids[0]), int(ids[-1]) + 1) if every and contiguous else gone
    for name in Epcm.__slots__:
        if name != "npages":
            getattr(e, name)[where] = 0
    _drop_contents(m.epc, gone)
    if m.tcs_threads:
        keys = np.fromiter(m.tcs_threads.keys(), dtype=np.int64, count=len(m.tcs_threads))
        for k in keys[np.isin(keys, gone)].tolist():
            drop_tcs_threads(m, k)


def decode_batch_status(m: Machine, phys: int, status: int) -> LeafResult:
    """The one-page outcome that an :func:`eremove_batch` entry ``status`` for ``phys`` stands for.

    Non-negative values are :class:`SgxStatus` codes; :data:`BATCH_FAULT` is #PF(phys) when
    ``phys`` is page-aligned but not EPC, and #GP(0) otherwise (misaligned, or the whole batch
    was refused because it began while EUPDATESVN was in flight); :data:`BATCH_UD` is the #UD of a
    batch issued in enclave mode.
    """
    if status >= 0:
        return SgxStatus(status)
    if status == BATCH_UD:
        return Fault(Vector.UD)
    if status != BATCH_FAULT:
        raise InvalidArgument(f"not an eremove_batch status: {status!r}")
    if not phys & _PAGE_MASK and m.epc.index_of(phys) is None:
        return _pf(phys)
    return gp0()

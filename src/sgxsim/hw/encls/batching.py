"""Shared machinery of the ENCLS batch paths: address arrays, vectorized EPC lookup, begin/account."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from sgxsim.errors import InvalidArgument
from sgxsim.hw.arch import (
    PAGE_SHIFT,
    EnclsLeaf,
    Fault,
    Vector,
    gp0,
)
from sgxsim.hw.cpu import LogicalProcessor
from sgxsim.hw.encls.common import SGX2_LEAVES
from sgxsim.hw.epc import Epc

if TYPE_CHECKING:
    from sgxsim.hw.machine import Machine

__all__ = [
    "BoolArray",
    "I64Array",
]


I64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def _as_addr_array(name: str, value: object) -> I64Array:
    """A 1-D int64 array of non-negative addresses, or InvalidArgument."""
    if not isinstance(value, np.ndarray) or value.ndim != 1 or value.dtype.kind not in "iu":
        raise InvalidArgument(f"{name} must be a 1-D integer numpy array, got {value!r:.80}")
    arr = value.astype(np.int64, copy=False)
    if arr.size and (int(arr.min()) < 0 or (value.dtype.kind == "u" and int(value.max()) > (1 << 63) - 1)):
        raise InvalidArgument(f"{name} holds addresses outside 0..2**63-1")
    return arr


def _indices_of(epc: Epc, phys: I64Array) -> tuple[I64Array, BoolArray]:
    """Vectorized :meth:`Epc.index_of`: (global page indices, in-EPC mask); -1 where not EPC."""
    if phys.size:
        lo, hi = int(phys.min()), int(phys.max())
        for s in epc.sections:
            if s.base <= lo and hi < s.end:  # every address in one section (the usual batch)
                idx = (phys - s.base) >> PAGE_SHIFT
                idx += s.first_page
                return idx, np.ones(phys.shape, dtype=np.bool_)
    order = sorted(epc.sections, key=lambda s: s.base)
    bases = np.array([s.base for s in order], dtype=np.int64)
    ends = np.array([s.end for s in order], dtype=np.int64)
    firsts = np.array([s.first_page for s in order], dtype=np.int64)
    j = np.searchsorted(bases, phys, side="right") - 1
    jc = np.clip(j, 0, len(order) - 1)
    inside = (j >= 0) & (phys < ends[jc])
    idx = np.where(inside, firsts[jc] + ((phys - bases[jc]) >> PAGE_SHIFT), -1)
    return idx.astype(np.int64, copy=False), inside


def _drop_contents(epc: Epc, idx: I64Array) -> None:
    """Forget the stored contents of the pages ``idx`` (cheap when few pages hold data)."""
    contents = epc.contents
    if not contents:
        return
    if len(contents) < idx.size:
        keys = np.fromiter(contents.keys(), dtype=np.int64, count=len(contents))
        for k in keys[np.isin(keys, idx)].tolist():
            del contents[k]
    else:
        for k in idx.tolist():
            contents.pop(k, None)


def _first_occurrence(idx: I64Array, eligible: BoolArray) -> BoolArray:
    """True where ``idx[i]`` is eligible and no earlier eligible entry has the same index."""
    pos = np.flatnonzero(eligible)
    sub = idx[pos]
    if sub.size < 2 or bool(np.all(sub[1:] > sub[:-1])):
        return eligible.copy()  # strictly increasing: no repeats (the common, sorted case)
    ordered = np.sort(sub)  # unstable and ~10x cheaper than unique's stable argsort
    if not bool(np.any(ordered[1:] == ordered[:-1])):
        return eligible.copy()  # shuffled but without repeats
    first = np.zeros(idx.shape, dtype=np.bool_)
    _, where = np.unique(sub, return_index=True)
    first[pos[where]] = True
    return first


def _batch_begin(m: Machine, cpu: int, leaf: EnclsLeaf) -> tuple[LogicalProcessor, Fault | None]:
    """Begin ``leaf`` on ``cpu`` and apply the gate Machine.encls_exec applies before a handler."""
    m.encls_begin(cpu, leaf)
    lp = m.cpus[cpu]
    if lp.in_enclave:
        return lp, Fault(Vector.UD)
    if lp.inflight_poisoned:
        return lp, gp0()
    if leaf in SGX2_LEAVES and not m.config.sgx2:
        return lp, gp0()
    m._take_cpusvn_snapshot()
    return lp, None


def _batch_account(m: Machine, lp: LogicalProcessor, leaf: EnclsLeaf, executed: int, charged: int) -> None:
    """Statistics and simulated time as ``executed`` one-page calls (``charged`` of them ran)."""
    if executed:
        m.stats[leaf.name] = m.stats.get(leaf.name, 0) + executed
    if charged:
        m.clock.charge(lp.id, m.config.latency.encls.get(leaf, 0) * charged)

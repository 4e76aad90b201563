"""The EPCM / SECS-state invariant checker used by tests, the kernel self-checks and the explorer."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sgxsim.hw.arch import (
    PAGE_SIZE,
)
from sgxsim.hw.encls.common import _PT_SECS, _PT_VA, _VERSION_SHIFT

if TYPE_CHECKING:
    from sgxsim.hw.machine import Machine

__all__ = [
    "validate_epcm",
]


def validate_epcm(m: Machine) -> list[str]:
    """Every violated EPCM/SECS-state invariant, as messages (an empty list means consistent).

    Checks: every SecsState sits on a valid PT_SECS page and every valid PT_SECS page has one;
    each SECS's child count equals its valid child pages; every valid child page's ENCLAVESECS is
    a valid PT_SECS with state and its ENCLAVEADDRESS lies in that enclave's ELRANGE; no invalid
    page carries BLOCKED/PENDING/MODIFIED/PR/RWX or stored contents; stored pages are 4 KiB; TCS
    threads are kept only for valid pages (or evicted TCSs, under ``-version``); processors inside
    an enclave agree with CR_ACTIVE_SECS.
    Used by tests, the kernel's self-checks and the explorer.
    """
    epc = m.epc
    e = epc.epcm
    problems: list[str] = []
    valid = e.valid
    secs_pages = np.flatnonzero(valid & (e.pt == _PT_SECS))
    state_keys = set(epc.secs_state)
    for k in sorted(state_keys - set(secs_pages.tolist())):
        problems.append(f"SECS state kept for EPC page {k}, which is not a valid PT_SECS page")
    for k in sorted(set(secs_pages.tolist()) - state_keys):
        problems.append(f"valid PT_SECS page {k} has no SECS state")
    child_mask = valid & (e.pt != _PT_SECS) & (e.pt != _PT_VA)
    children = np.flatnonzero(child_mask)
    owners = e.secs[children]
    uniq, counts = np.unique(owners, return_counts=True)
    actual = dict(zip(uniq.tolist(), counts.tolist(), strict=True))
    for k, state in sorted(epc.secs_state.items()):
        if state.child_count != actual.get(k, 0):
            problems.append(
                f"SECS {k}: child_count {state.child_count} but {actual.get(k, 0)} valid children"
            )
    for owner in uniq.tolist():
        if owner not in state_keys or not 0 <= owner < e.npages or not valid[owner]:
            problems.append(f"valid child pages name SECS {owner}, which is not a valid SECS")
            continue
        state = epc.secs_state[owner]
        lin = e.linaddr[children[owners == owner]]
        outside = (lin < np.uint64(state.base)) | (lin >= np.uint64(state.base + state.size))
        if outside.any():
            problems.append(f"SECS {owner}: {int(outside.sum())} children lie outside its ELRANGE")
    invalid = ~valid
    for name in ("blocked", "pending", "modified", "pr"):
        bad = int(np.count_nonzero(getattr(e, name) & invalid))
        if bad:
            problems.append(f"{bad} invalid EPC pages have {name.upper()} set")
    bad_rwx = int(np.count_nonzero((e.rwx != 0) & invalid))
    if bad_rwx:
        problems.append(f"{bad_rwx} invalid EPC pages have RWX bits set")
    for k, page in epc.contents.items():
        if not 0 <= k < e.npages or not valid[k]:
            problems.append(f"contents stored for EPC page {k}, which is not valid")
        elif len(page) != PAGE_SIZE:
            problems.append(f"contents of EPC page {k} are {len(page)} bytes")
    for k in m.tcs_threads:
        if k < 0:
            if -k >= m.cr_paging_version << _VERSION_SHIFT:
                problems.append(f"a TCS thread is kept for EWB version {-k}, which was never issued")
        elif k >= e.npages or not valid[k]:
            problems.append(f"a TCS thread is kept for EPC page {k}, which is not valid")
    for k, state in epc.secs_state.items():
        for cpu in state.inside:
            if not 0 <= cpu < len(m.cpus) or m.cpus[cpu].active_secs != k:
                problems.append(f"SECS {k} lists CPU {cpu} inside, but its CR_ACTIVE_SECS differs")
    for lp in m.cpus:
        if lp.active_secs is not None:
            state_in = epc.secs_state.get(lp.active_secs)
            if state_in is None or lp.id not in state_in.inside:
                problems.append(f"CPU {lp.id} executes in SECS {lp.active_secs}, which does not list it")
    return problems

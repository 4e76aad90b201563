"""The invariants checked after every step and when the schedule completes (see :mod:`sgxsim.sim.svn`)."""

from __future__ import annotations

import numpy as np

from sgxsim.hw.arch import EnclsLeaf, SgxStatus
from sgxsim.kernel.encl import SGX_ENCL_CREATED, SGX_ENCL_DEAD, SgxEncl
from sgxsim.kernel.main import validate_epc
from sgxsim.kernel.policy import SvnPolicy
from sgxsim.sim.explore import Invariant
from sgxsim.sim.svn.world import SvnWorld


def _inv_locked_window(w: SvnWorld) -> str | None:
    k = w.kernel
    if k is None:
        return None
    in_window = k.svn.in_locked_window
    if not in_window:
        w.prev_in_window = False
        return None
    valid = w.machine.epc.epcm.valid
    free = k.sgx_nr_free_pages.read()
    msg = None
    if w.prev_in_window:
        new = np.flatnonzero(valid & ~w.prev_valid)
        if len(new):
            msg = f"EPC page(s) {new[:5].tolist()} became valid between synchronize_srcu() and the unlock"
        elif free < w.prev_free:
            msg = f"{w.prev_free - free} EPC page(s) allocated between synchronize_srcu() and the unlock"
    w.prev_valid = valid.copy()
    w.prev_in_window = True
    w.prev_free = free
    return msg


def _encl_dead(w: SvnWorld, encl: object) -> bool:
    assert isinstance(encl, SgxEncl)
    if not encl.flags & SGX_ENCL_CREATED:
        return True  # opened, never ECREATE'd: no SGX enclave yet
    if encl.flags & SGX_ENCL_DEAD or encl.refcount.kref_read() == 0:
        return True
    if w.as_posted:
        secs = encl.secs_epc
        return secs < 0 or not bool(w.machine.epc.epcm.valid[secs])
    return False


def _inv_eupdatesvn(w: SvnWorld) -> str | None:
    """EUPDATESVN succeeded (CR_BASE_PK replaced) only with no valid EPC page; then every
    enclave is dead and CPUSVN is the minimum loaded SVN."""
    k = w.kernel
    m = w.machine
    pk = m.cr_base_pk
    if pk == w.prev_base_pk:
        return None
    w.prev_base_pk = pk
    if k is None:
        return None
    valid = int(np.count_nonzero(m.epc.epcm.valid))
    if valid:
        return f"EUPDATESVN succeeded with {valid} valid EPC page(s)"
    if m.cpusvn != m.min_loaded_svn():
        return f"CPUSVN {m.cpusvn.hex()} != minimum loaded SVN {m.min_loaded_svn().hex()} after EUPDATESVN"
    alive = [e.id for e in list(k.enclaves.values()) if not _encl_dead(w, e)]
    if alive:
        return f"enclave(s) {alive} created before the update are not dead after EUPDATESVN succeeded"
    if k.svn.config.policy is SvnPolicy.LINUX_6_19_ON_OPEN and k.sgx_usage_count:
        return f"EUPDATESVN succeeded with SGX usage count {k.sgx_usage_count}"
    return None


def _inv_usage_zero(w: SvnWorld) -> str | None:
    k = w.kernel
    if k is None or k.sgx_usage_count == 0:
        return None
    cfg = k.svn.config
    counted = cfg.policy is SvnPolicy.LINUX_6_19_ON_OPEN or (
        cfg.policy is SvnPolicy.EXPLICIT_TRIGGER and cfg.trigger_mode == "non-destructive"
    )
    if counted and any(lp.inflight == EnclsLeaf.EUPDATESVN for lp in w.machine.cpus):
        return f"EUPDATESVN in flight with SGX usage count {k.sgx_usage_count}"
    return None


def _inv_records(w: SvnWorld) -> str | None:
    k = w.kernel
    if k is None:
        return None
    svn = k.svn
    waiting = svn.zap_waiting_count.read()
    w.max_zap_waiting = max(w.max_zap_waiting, waiting)
    if svn.in_locked_window and not svn.epc_locked:
        return "in_locked_window set while EPC is unlocked"
    if waiting < 0:
        return "zap_waiting_count < 0"
    updates = svn.updates
    while w.records_checked < len(updates):
        rec = updates[w.records_checked]
        if not rec.result_name:
            break
        w.records_checked += 1
        if rec.tries and rec.result == SgxStatus.SGX_LOCKFAIL:
            return f"EUPDATESVN ({rec.trigger}) returned SGX_LOCKFAIL: another ENCLS leaf was in flight"
        if (
            rec.result == SgxStatus.SGX_EPC_NOT_READY
            and rec.trigger != "open"
            and not any("EPC not ready" in line for line in k.log.lines())
        ):
            return "EUPDATESVN returned SGX_EPC_NOT_READY without a log line"
    return None


def _inv_user(w: SvnWorld) -> str | None:
    return w.errors[0] if w.errors else None


def _inv_guest_warn(w: SvnWorld) -> str | None:
    g = w.guest
    if g is None or not g.log.warn_count:
        return None
    return f"guest kernel WARN: {g.log.warnings[0]}"


def svn_invariants(w: SvnWorld) -> list[Invariant[SvnWorld]]:
    """The per-step invariants (described in :mod:`sgxsim.sim.svn`; guest-* add ``guest-no-warn``)."""
    invs = [
        Invariant("locked-window", _inv_locked_window),
        Invariant("eupdatesvn-empty-epc", _inv_eupdatesvn),
        Invariant("eupdatesvn-usage-zero", _inv_usage_zero),
        Invariant("update-records", _inv_records),
        Invariant("user-visible", _inv_user),
    ]
    if w.vm is not None:
        invs.append(Invariant("guest-no-warn", _inv_guest_warn))
    return invs


def _final_epc(w: SvnWorld) -> str | None:
    k = w.k
    rep = validate_epc(k, expect_empty=True)
    if rep.problems:
        return "; ".join(rep.problems[:3])
    summary = k.epc_summary()
    if summary["free"] + summary["used"] != summary["total"]:
        return f"free {summary['free']} + used {summary['used']} != total {summary['total']}"
    if k.enclaves or k.vepcs:
        return f"enclaves {sorted(k.enclaves)} / vEPCs {sorted(k.vepcs)} remain after every process exited"
    return None


def _final_dram(w: SvnWorld) -> str | None:
    k = w.k
    # Kernel scratch pages: one per task that issued ENCLS with on-stack structures.
    allowed = w.dram_baseline + len(k._scratch)
    if k.dram_pages > allowed:
        return f"DRAM pages {k.dram_pages} > {allowed} after every process exited"
    return None


def _final_outcome(w: SvnWorld) -> str | None:
    recs = w.updates(w.scenario.trigger)
    if not recs:
        return f"no {w.scenario.trigger!r} update record"
    if w.as_posted:
        return None
    bad = [
        r.result_name for r in recs if r.result_name not in w.scenario.outcomes and r.result_name != "SKIPPED"
    ]
    if bad:
        return f"update result(s) {bad} not in {sorted(w.scenario.outcomes)}"
    return None


def _final_guest(w: SvnWorld) -> str | None:
    """guest-*: the guest's EPC accounting was clean when its process exited; under zap, a
    guest whose pages were EREMOVE'd saw the loss and rebuilt; under skip it lost nothing."""
    if w.guest_problems:
        return "guest EPC: " + "; ".join(w.guest_problems[:3])
    if not w.guest_built:
        return "the guest never built its enclave"
    zapped = sum(r.vepc_pages_zapped for r in w.updates())
    if w.scenario.vepc == "skip" and (zapped or w.guest_lost):
        return f"vepc=skip: {zapped} guest page(s) zapped, {w.guest_lost} loss(es) seen"
    if w.scenario.vepc == "zap" and not w.as_posted and zapped and not (w.guest_lost and w.guest_rebuilt):
        return f"{zapped} guest page(s) zapped; {w.guest_lost} loss(es), {w.guest_rebuilt} rebuild(s) seen"
    return None


def svn_final_checks(w: SvnWorld) -> list[Invariant[SvnWorld]]:
    finals = [
        Invariant("epc-clean", _final_epc),
        Invariant("no-dram-leak", _final_dram),
        Invariant("outcome", _final_outcome),
    ]
    if w.vm is not None:
        finals.append(Invariant("guest-clean", _final_guest))
    return finals

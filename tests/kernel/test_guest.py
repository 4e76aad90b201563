"""KVM guests (kernel.kvm, kernel.guest): guest CPUID, a guest building and running the selftest
enclave on vEPC-backed EPC, ECREATE/EINIT exits through sgx_virt_ecreate/einit, injected faults,
EPC loss (REMOVE_ALL, svn vepc="zap") and the user-space rebuild, host accounting after the VM."""

from __future__ import annotations

import errno
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.kernel.kernel_helpers import World, make_world, signing_key

from sgxsim.errors import InvalidArgument
from sgxsim.hw.arch import (
    PAGE_SIZE,
    SGX_ATTR_PRIV_MASK,
    SGX_ATTR_UNPRIV_MASK,
    SGX_CPUID_EDECCSSA,
    Attributes,
    EnclsLeaf,
    Fault,
    PageType,
    PfError,
    Secs,
    SgxStatus,
    Vector,
    encode_epc_section,
    gp0,
    secinfo_flags,
)
from sgxsim.hw.cpu import MicrocodePatch
from sgxsim.hw.encls import validate_epcm
from sgxsim.kernel import uapi as U  # noqa: N812
from sgxsim.kernel import virt
from sgxsim.kernel.kvm import (
    GUEST_EPC_BASE,
    KVM_SGX_LEPUBKEYHASH_DEFAULT,
    KvmExit,
    Vm,
    VmConfig,
    encls_exiting_bitmap,
)
from sgxsim.kernel.main import EpcOwner, Kernel, KernelConfig, validate_epc
from sgxsim.kernel.process import Process
from sgxsim.sdk.loader import Enclave, load_enclave
from sgxsim.sdk.sign import key_mrsigner, sign_enclave
from sgxsim.sdk.test_encl import (
    EnclOp,
    build_test_encl,
    encl_op_get_from_buf,
    encl_op_put_to_buf,
)

HOST_PAGES = 256
VEPC_PAGES = 64


@dataclass
class Guest:
    world: World
    vm: Vm
    kernel: Kernel
    proc: Process


def start_vm(world: World, config: VmConfig | None = None) -> Guest:
    vm = Vm(world.kernel, config)
    world.procs.append(vm.proc)  # the world's teardown ends the VMM: its vEPC is released
    g = vm.boot()
    return Guest(world, vm, g, Process(g, "app"))


@pytest.fixture
def world() -> Iterator[World]:
    w = make_world(HOST_PAGES)
    yield w
    w.teardown()


@pytest.fixture
def guest(world: World) -> Guest:
    return start_vm(world)


def put(encl: Enclave, value: int) -> None:
    op = encl_op_put_to_buf()
    op.header.type = int(EnclOp.ENCL_OP_PUT_TO_BUFFER)
    op.value = value
    assert encl.call_op(op) == 0
    assert encl.run.function == U.EEXIT


def get(encl: Enclave) -> int:
    op = encl_op_get_from_buf()
    op.header.type = int(EnclOp.ENCL_OP_GET_FROM_BUFFER)
    assert encl.call_op(op) == 0
    assert encl.run.function == U.EEXIT
    return int(op.value)


def secs_state_of(g: Guest, encl: Enclave) -> Any:
    (state,) = [s for s in g.world.machine.epc.secs_state.values() if s.base == encl.base]
    return state


def guest_encl(g: Guest) -> Any:
    (encl,) = g.kernel.enclaves.values()
    return encl


# ---------------------------------------------------------------------------------------
# CPUID and the EPC layout


def test_guest_cpuid_is_kvm_and_qemu_view(world: World) -> None:
    g = start_vm(world, VmConfig(epc_pages=(16, 8)))
    hm, gm = world.machine, g.vm.machine
    h0, h1 = hm.cpuid(0x12, 0), hm.cpuid(0x12, 1)
    assert h0[0] & (1 << 10)  # the host has EUPDATESVN ...
    eax, ebx, ecx, edx = gm.cpuid(0x12, 0)
    assert eax == 0x3 | SGX_CPUID_EDECCSSA  # ... KVM exposes SGX1 | SGX2 | EDECCSSA, never EUPDATESVN
    assert (ebx, ecx, edx) == (h0[1] & 1, 0, h0[3])
    assert gm.cpuid(0x12, 1) == (h1[0] & (SGX_ATTR_PRIV_MASK | SGX_ATTR_UNPRIV_MASK), 0, h1[2], h1[3])
    assert gm.cpuid(0x12, 2) == encode_epc_section(GUEST_EPC_BASE, 16 * PAGE_SIZE)
    assert gm.cpuid(0x12, 3) == encode_epc_section(GUEST_EPC_BASE + 16 * PAGE_SIZE, 8 * PAGE_SIZE)
    assert gm.cpuid(0x12, 4) == (0, 0, 0, 0) and gm.cpuid(0x7, 0) == (0, 0, 0, 0)
    k = g.kernel
    assert k.sgx2 and not k.sgx_eupdatesvn
    assert [(s.phys_addr, s.npages, s.first_page) for s in k.sgx_epc_sections] == [
        (GUEST_EPC_BASE, 16, 0),
        (GUEST_EPC_BASE + 16 * PAGE_SIZE, 8, 16),
    ]
    assert k.sgx_nr_free_pages.read() == 24
    assert "sgx_vepc" not in " ".join(k.misc_devices)  # no nested virtualization
    assert len(gm.cpus) == 2 and all(lp.le_pubkey_hash == KVM_SGX_LEPUBKEYHASH_DEFAULT for lp in gm.cpus)


def test_guest_without_sgx2(world: World) -> None:
    g = start_vm(world, VmConfig(sgx2=False))
    assert g.vm.machine.cpuid(0x12, 0)[0] & ~SGX_CPUID_EDECCSSA == 0x1  # SGX1 only (EDECCSSA is separate)
    assert not g.kernel.sgx2
    # EAUG is then not enabled in the guest: it exits and KVM injects #GP.
    assert g.vm.machine.encls(0, EnclsLeaf.EAUG, 0, GUEST_EPC_BASE, 0) == gp0()
    assert g.vm.exits == {"EAUG": 1}


def test_vepc_pages_are_host_owned_and_mapped_by_the_ept(world: World) -> None:
    k = world.kernel
    g = start_vm(world)
    assert k.sgx_nr_free_pages.read() == HOST_PAGES - VEPC_PAGES  # prealloc
    (vepc,) = k.vepcs.values()
    ept = g.vm.ept.mapped()
    assert sorted(ept) == list(range(VEPC_PAGES))
    for gidx, hidx in ept.items():
        assert vepc.page_array[gidx] == hidx
        assert k.epc_owner_kind[hidx] == EpcOwner.VEPC and k.epc_owner_id[hidx] == vepc.id
        assert g.vm.machine.guest_phys_to_host(GUEST_EPC_BASE + gidx * PAGE_SIZE + 8) == k.phys(hidx) + 8
    # The guest's boot-time sanitize EREMOVE'd every page natively (no exit).
    assert g.vm.machine.stats["EREMOVE"] == VEPC_PAGES and g.vm.exits == {}
    world.check()
    assert not validate_epc(g.kernel).problems


def test_vm_needs_vepc_and_enough_epc() -> None:
    w = make_world(HOST_PAGES, config=KernelConfig(vmx=False))
    with pytest.raises(OSError) as exc:
        Vm(w.kernel)
    assert exc.value.errno == errno.ENOENT
    w.teardown()
    w = make_world(HOST_PAGES)
    with pytest.raises(OSError) as exc:
        Vm(w.kernel, VmConfig(epc_pages=(HOST_PAGES + 1,)))
    assert exc.value.errno == errno.ENOMEM
    w.teardown()  # the failed VMM released everything it had faulted in


@pytest.mark.parametrize(
    "kw",
    [
        {"epc_pages": ()},
        {"epc_pages": (0,)},
        {"epc_pages": [4]},
        {"vcpus": 0},
        {"ram_pages": 10},
        {"ram_pages": 1 << 20},
        {"sgx2": 1},
    ],
)
def test_vm_config_validation(kw: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        VmConfig(**kw)


def test_vm_argument_checks(world: World) -> None:
    with pytest.raises(InvalidArgument):
        Vm(world.machine)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        Vm(world.kernel, {"vcpus": 1})  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------
# Building and running an enclave in the guest


def test_guest_builds_and_runs_the_test_enclave(guest: Guest, monkeypatch: pytest.MonkeyPatch) -> None:
    g, hk, hm = guest, guest.world.kernel, guest.world.machine
    calls: list[tuple[str, int | None, tuple[int, ...]]] = []
    real_ecreate, real_einit = virt.sgx_virt_ecreate, virt.sgx_virt_einit

    def spy_ecreate(k: Kernel, *args: Any) -> tuple[int, int]:
        calls.append(("ecreate", None if k.current_proc is None else k.current_proc.pid, args))
        return real_ecreate(k, *args)

    def spy_einit(k: Kernel, *args: Any) -> tuple[int, int]:
        calls.append(("einit", None if k.current_proc is None else k.current_proc.pid, args[:3]))
        return real_einit(k, *args)

    monkeypatch.setattr(virt, "sgx_virt_ecreate", spy_ecreate)
    monkeypatch.setattr(virt, "sgx_virt_einit", spy_einit)
    host_ecreate, host_einit = hm.stats.get("ECREATE", 0), hm.stats.get("EINIT", 0)
    image = build_test_encl()
    encl = load_enclave(g.proc, image, key=signing_key())
    # ECREATE and EINIT exited and ran on the host on the VMM's behalf, with VMM addresses.
    assert [c[0] for c in calls] == ["ecreate", "einit"]
    assert {c[1] for c in calls} == {g.vm.proc.pid}
    vmm_ranges = [(s.hva, s.hva + s.size) for s in g.vm.memslots]
    for _name, _pid, args in calls:
        for a in args[-3:]:
            assert any(lo <= a < hi for lo, hi in vmm_ranges), hex(a)
    assert g.vm.exits == {"ECREATE": 1, "EINIT": 1}
    assert (hm.stats["ECREATE"], hm.stats["EINIT"]) == (host_ecreate + 1, host_einit + 1)
    gstats = g.vm.machine.stats
    assert "ECREATE" not in gstats and "EINIT" not in gstats and gstats["EADD"] > 0
    # MRENCLAVE as the offline builder computes it, committed in the host's EPC.
    state = secs_state_of(g, encl)
    assert state.initialized and state.mrenclave == image.mrenclave() == encl.sigstruct.mrenclave
    assert state.mrsigner == key_mrsigner(signing_key())
    # EINIT ran with the guest's virtual LEPUBKEYHASH, which the host wrote to its MSRs.
    assert g.vm.machine.cpus[0].le_pubkey_hash == key_mrsigner(signing_key())
    assert hm.cpus[hk.current_cpu()].le_pubkey_hash == key_mrsigner(signing_key())
    # The guest's SECS page is a host vEPC page; the EPCM names host indices on the host.
    ge = guest_encl(g)
    host_secs = g.vm.machine.guest_page_to_host(ge.secs_epc)
    assert host_secs is not None and hk.epc_owner_kind[host_secs] == EpcOwner.VEPC
    assert hm.epc.secs_state[host_secs] is state
    children = np.flatnonzero(hm.epc.epcm.valid & (hm.epc.epcm.secs == host_secs))
    assert len(children) == state.child_count > 0
    assert all(hk.epc_owner_kind[c] == EpcOwner.VEPC for c in children.tolist())
    # ... and the guest's indices in the guest's view.
    gepcm = g.vm.machine.epc.epcm
    assert int(gepcm.pt[ge.secs_epc]) == PageType.PT_SECS and int(gepcm.secs[ge.secs_epc]) == -1
    gchildren = np.flatnonzero(np.asarray(gepcm.valid) & (np.asarray(gepcm.secs) == ge.secs_epc))
    assert sorted(g.vm.ept.g2h[gchildren].tolist()) == sorted(children.tolist())
    put(encl, 0x1122334455667788)
    assert get(encl) == 0x1122334455667788
    assert gstats["EENTER"] >= 2 and gstats["EEXIT"] >= 2 and "EENTER" not in g.vm.exits
    assert not validate_epcm(hm) and not validate_epcm(g.vm.machine)
    assert not validate_epc(g.kernel).problems and not validate_epc(hk).problems
    encl.close()
    assert not validate_epc(g.kernel, expect_empty=True).problems
    assert g.kernel.log.warn_count == 0


def test_guest_enclave_keys_are_the_hosts(guest: Guest) -> None:
    """Package state is the host's: a guest enclave sees the host's CPUSVN and EIDs advance on
    the host's counter."""
    hm = guest.world.machine
    eid = hm.cr_next_eid
    encl = load_enclave(guest.proc, build_test_encl(), key=signing_key())
    assert secs_state_of(guest, encl).eid == eid and hm.cr_next_eid == eid + 1
    gm = guest.vm.machine
    assert gm.cpusvn == hm.cpusvn and gm.fused_secret == hm.fused_secret
    assert gm.load_microcode(0, MicrocodePatch.with_svns(0xD000999, base=9)) is False
    with pytest.raises(InvalidArgument):
        gm.cold_reset()
    with pytest.raises(InvalidArgument):
        gm.kexec()
    encl.close()


def test_einit_error_code_goes_to_rax(guest: Guest) -> None:
    image = build_test_encl()
    wrong = sign_enclave(build_test_encl(2 * PAGE_SIZE), signing_key())
    with pytest.raises(OSError) as exc:
        load_enclave(guest.proc, image, sigstruct=wrong)
    assert exc.value.errno == errno.EPERM  # EINIT returned SGX_INVALID_MEASUREMENT in RAX
    assert guest.vm.exits == {"ECREATE": 1, "EINIT": 1} and guest.vm.injected == []
    assert not validate_epc(guest.kernel, expect_empty=True).problems


# ---------------------------------------------------------------------------------------
# ECREATE exits: KVM's checks and injected faults, driven directly on a vCPU


class Ecreate:
    """A guest-kernel ECREATE: PAGEINFO, SECINFO and SECS contents in guest RAM."""

    def __init__(self, g: Guest) -> None:
        self.g = g
        gm = g.vm.machine
        self.pageinfo, self.secinfo, self.src = (gm.dram.alloc_page() for _ in range(3))
        gm.dram.write(self.secinfo, struct.pack("<Q", secinfo_flags(PageType.PT_SECS)) + bytes(56))

    def __call__(self, secs: Secs, epc_gpa: int = GUEST_EPC_BASE, pageinfo: int | None = None) -> Any:
        gm = self.g.vm.machine
        gm.dram.write(self.src, secs.pack())
        gm.dram.write(self.pageinfo, struct.pack("<4Q", 0, self.src, self.secinfo, 0))
        return gm.encls(0, EnclsLeaf.ECREATE, self.pageinfo if pageinfo is None else pageinfo, epc_gpa, 0)

    def remove(self, epc_gpa: int = GUEST_EPC_BASE) -> Any:
        return self.g.vm.machine.encls(0, EnclsLeaf.EREMOVE, 0, epc_gpa, 0)


def good_secs(**kw: Any) -> Secs:
    fields: dict[str, Any] = {
        "size": 0x10000,
        "base": 0x100000,
        "ssa_frame_size": 1,
        "attributes": int(Attributes.MODE64BIT),
        "xfrm": 3,
    }
    fields.update(kw)
    return Secs(**fields)


def test_ecreate_exit_checks_inject_gp(guest: Guest) -> None:
    ec = Ecreate(guest)
    bad = [
        good_secs(attributes=int(Attributes.MODE64BIT | Attributes.PROVISIONKEY)),  # not allowed
        good_secs(miscselect=0x2),  # MISCSELECT bit the guest lacks
        good_secs(attributes=int(Attributes.MODE64BIT | Attributes.INIT)),  # not in CPUID.(12,1)
        good_secs(xfrm=0x1),  # FP without SSE
        good_secs(xfrm=0x3 | (1 << 9)),  # beyond XCR0
        good_secs(size=1 << 47),  # >= 2^MaxEnclaveSize_64
        good_secs(attributes=0, size=1 << 31),  # 32-bit enclave >= 2^MaxEnclaveSize_32
    ]
    for secs in bad:
        assert ec(secs) == gp0(), secs
    assert ec(good_secs(), pageinfo=ec.pageinfo + 8) == gp0()  # PAGEINFO not 32-byte aligned
    assert ec(good_secs(), epc_gpa=GUEST_EPC_BASE + 64) == gp0()  # SECS not page aligned
    assert guest.vm.injected == [gp0()] * (len(bad) + 2)
    assert guest.vm.exits == {"ECREATE": len(bad) + 2}
    assert guest.world.machine.stats.get("ECREATE", 0) == 0  # none reached the hardware
    assert ec(good_secs()) == SgxStatus.SUCCESS
    assert ec.remove() == SgxStatus.SUCCESS


def test_provisioning_allowed_lets_provisionkey_through(world: World) -> None:
    g = start_vm(world, VmConfig(provisioning_allowed=True))
    ec = Ecreate(g)
    assert ec(good_secs(attributes=int(Attributes.MODE64BIT | Attributes.PROVISIONKEY))) == SgxStatus.SUCCESS
    assert ec.remove() == SgxStatus.SUCCESS
    assert g.vm.exits == {"ECREATE": 1}  # the guest's CPUID still differs from the hardware's


def test_ecreate_on_a_used_page_reflects_an_epcm_fault(world: World) -> None:
    g = start_vm(world)
    ec = Ecreate(g)
    assert ec(good_secs()) == SgxStatus.SUCCESS
    # The host's ECREATE faults on the valid page; the SGX2 guest gets #PF(P|W|SGX) at the SECS.
    fault = ec(good_secs())
    assert fault == Fault(int(Vector.PF), int(PfError.P | PfError.W | PfError.SGX), GUEST_EPC_BASE)
    assert g.vm.injected == [fault]
    assert ec.remove() == SgxStatus.SUCCESS
    g1 = start_vm(world, VmConfig(sgx2=False, epc_pages=(8,)))
    ec1 = Ecreate(g1)
    assert ec1(good_secs()) == SgxStatus.SUCCESS
    assert ec1(good_secs()) == gp0()  # an SGX1 guest gets #GP(0)
    assert ec1.remove() == SgxStatus.SUCCESS


@pytest.mark.parametrize("how", ["read-only", "unmapped"])
def test_ecreate_on_a_bad_vmm_mapping_injects_the_pf(world: World, how: str) -> None:
    """The VMM's vEPC mapping behind the guest's SECS is read-only or gone: the host ECREATE
    takes the #PF, sgx_virt_ecreate returns -EFAULT/14, KVM injects the fault; no WARN, the VM
    goes on (Models: virt.c sgx_virt_ecreate, vmx/sgx.c sgx_inject_fault)."""
    g = start_vm(world)
    slot = next(s for s in g.vm.memslots if s.kind == "epc")
    if how == "read-only":
        g.vm.proc.mprotect(slot.hva, slot.size, U.PROT_READ)
    else:
        g.vm.proc.munmap(slot.hva, slot.size)
    fault = Ecreate(g)(good_secs())
    assert fault == Fault(int(Vector.PF), int(PfError.P | PfError.W | PfError.SGX), GUEST_EPC_BASE)
    assert g.vm.injected == [fault] and g.vm.alive
    assert world.kernel.log.warn_count == 0


def test_unbacked_gpa_stops_the_vm(guest: Guest) -> None:
    ec = Ecreate(guest)
    with pytest.raises(KvmExit) as exc:
        ec(good_secs(), pageinfo=0x8000_0000)  # no memslot there
    assert exc.value.reason == "KVM_EXIT_INTERNAL_ERROR"


@pytest.mark.parametrize("leaf", [EnclsLeaf.EUPDATESVN, EnclsLeaf.ELDBC, EnclsLeaf.ELDUC, 0x30])
def test_leaves_kvm_does_not_enable_inject_gp(guest: Guest, leaf: int) -> None:
    assert guest.vm.machine.encls(0, leaf, 0, 0, 0) == gp0()
    assert sum(guest.vm.exits.values()) == 1 and guest.vm.injected == [gp0()]


@given(
    sgx1=st.booleans(),
    sgx2=st.booleans(),
    icreate=st.booleans(),
    lc=st.booleans(),
    leaf=st.integers(0, 70),
)
def test_encls_exiting_bitmap_property(sgx1: bool, sgx2: bool, icreate: bool, lc: bool, leaf: int) -> None:
    bitmap = encls_exiting_bitmap(sgx1, sgx2, icreate, lc)
    exits = bool(bitmap >> min(leaf, 63) & 1)
    native = (
        (
            (sgx1 and EnclsLeaf.ECREATE <= leaf <= EnclsLeaf.ETRACK)
            or (sgx2 and EnclsLeaf.EAUG <= leaf <= EnclsLeaf.EMODT)
        )
        and not (leaf == EnclsLeaf.ECREATE and icreate and sgx1)
        and not (leaf == EnclsLeaf.EINIT and lc)
    )
    assert exits == (not native)
    assert bitmap >> 63 & 1 and not bitmap >> 64  # EUPDATESVN and above always exit


# ---------------------------------------------------------------------------------------
# EPC loss and the user-space rebuild


def assert_epcm_fault_on_entry(encl: Enclave) -> None:
    op = encl_op_get_from_buf()
    op.header.type = int(EnclOp.ENCL_OP_GET_FROM_BUFFER)
    assert encl.call_op(op) == 0
    run = encl.run
    assert run.function == U.EENTER  # the leaf that faulted
    assert run.exception_vector == Vector.PF
    assert run.exception_error_code & (PfError.SGX | PfError.P) == PfError.SGX | PfError.P
    assert run.exception_addr == encl.tcs[0]


def test_remove_all_kills_the_guest_enclave_and_it_is_rebuilt(guest: Guest) -> None:
    g, hk = guest, guest.world.kernel
    image = build_test_encl()
    encl = load_enclave(g.proc, image, key=signing_key())
    put(encl, 7)
    assert hk.machine.epc.nr_valid() > 0
    assert g.vm.reset_epc() == [0]  # QEMU's reset: two rounds of SGX_IOC_VEPC_REMOVE_ALL
    assert hk.machine.epc.nr_valid() == 0
    assert not any(s.base == encl.base for s in hk.machine.epc.secs_state.values())
    # Pages stay allocated to the vEPC and mapped into the guest: the host accounting holds.
    assert hk.sgx_nr_free_pages.read() == HOST_PAGES - VEPC_PAGES
    guest.world.check()
    assert_epcm_fault_on_entry(encl)
    assert_epcm_fault_on_entry(encl)  # every entry faults the same way
    # User space tears the enclave down; the guest driver's EREMOVEs of invalid pages succeed.
    encl.close()
    assert not validate_epc(g.kernel, expect_empty=True).problems
    assert g.kernel.log.warn_count == 0, g.kernel.log.format()
    encl = load_enclave(g.proc, image, key=signing_key())
    assert secs_state_of(g, encl).mrenclave == image.mrenclave()
    assert get(encl) == 1  # a fresh enclave: encl_buffer = { 1 } again, not the 7 put before
    put(encl, 9)
    assert get(encl) == 9
    assert g.vm.exits == {"ECREATE": 2, "EINIT": 2}
    encl.close()


def test_guest_process_exit_after_epc_loss(guest: Guest) -> None:
    encl = load_enclave(guest.proc, build_test_encl(), key=signing_key())
    guest.vm.reset_epc()
    assert_epcm_fault_on_entry(encl)
    guest.proc.exit()  # exit(2) releases the dead enclave
    assert not guest.kernel.enclaves
    assert not validate_epc(guest.kernel, expect_empty=True).problems
    p2 = Process(guest.kernel, "app2")
    encl = load_enclave(p2, build_test_encl(), key=signing_key())
    put(encl, 1)
    assert get(encl) == 1
    p2.exit()


def test_remove_all_is_busy_while_a_vcpu_is_inside(guest: Guest) -> None:
    encl = load_enclave(guest.proc, build_test_encl(), key=signing_key())
    seen: list[int] = []

    def step(lp: Any) -> None:
        if not seen:
            try:
                guest.vm.reset_epc()
            except OSError as exc:
                seen.append(exc.errno or 0)

    guest.vm.machine.on_enclave_step = step
    put(encl, 5)
    guest.vm.machine.on_enclave_step = None
    assert seen == [errno.EBUSY]  # EREMOVE met SGX_ENCLAVE_ACT: the vCPU is inside
    assert get(encl) == 5  # the first pages in pgoff order are the running enclave's: it survived
    encl.close()
    encl = load_enclave(guest.proc, build_test_encl(), key=signing_key())
    put(encl, 6)
    assert get(encl) == 6
    encl.close()


def test_svn_zap_of_guest_pages() -> None:
    svn_mod = pytest.importorskip("sgxsim.kernel.svn")
    from tests.kernel.kernel_helpers import small_machine

    try:
        hk = Kernel(small_machine(HOST_PAGES), svn=svn_mod.SvnConfig(policy="explicit-trigger", vepc="zap"))
    except TypeError:
        pytest.skip("Kernel(svn=...) not available")
    w = World(hk.machine, hk, dram_baseline=hk.dram_pages + 1)
    g = start_vm(w)
    encl = load_enclave(g.proc, build_test_encl(), key=signing_key())
    assert hk.svn.update_svn_store() == 0
    assert hk.svn.updates[-1].vepc_pages_zapped == VEPC_PAGES
    assert_epcm_fault_on_entry(encl)
    encl.close()
    encl = load_enclave(g.proc, build_test_encl(), key=signing_key())
    put(encl, 3)
    assert get(encl) == 3
    w.teardown()


def test_vm_shutdown_returns_the_host_epc(world: World) -> None:
    g = start_vm(world)
    encl = load_enclave(g.proc, build_test_encl(), key=signing_key())
    put(encl, 1)
    g.vm.shutdown()
    g.vm.shutdown()  # idempotent
    assert not g.vm.alive
    world.check(expect_empty=True)
    assert not world.kernel.vepcs and world.kernel.sgx_usage_count == 0
    with pytest.raises(InvalidArgument):
        g.vm.boot()


# ---------------------------------------------------------------------------------------
# Properties of the translation layer


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_guest_epcm_is_the_host_epcm_through_the_ept(guest: Guest, data: st.DataObject) -> None:
    gm, hm, ept = guest.vm.machine, guest.world.machine, guest.vm.ept
    idx = np.array(data.draw(st.lists(st.integers(0, VEPC_PAGES - 1), min_size=1, max_size=8, unique=True)))
    lin = np.array(
        data.draw(st.lists(st.integers(0, 1 << 40), min_size=len(idx), max_size=len(idx))), dtype=np.uint64
    )
    secs = np.array(
        data.draw(st.lists(st.integers(-1, VEPC_PAGES - 1), min_size=len(idx), max_size=len(idx)))
    )
    e = gm.epc.epcm
    e.linaddr[idx] = lin
    e.secs[idx] = secs
    e.valid[idx] = True
    host = ept.g2h[idx]
    assert (hm.epc.epcm.linaddr[host] == lin).all()
    expect_host = np.where(secs >= 0, ept.g2h[np.maximum(secs, 0)], secs)
    assert (hm.epc.epcm.secs[host] == expect_host).all()
    assert (e.secs[idx] == secs).all() and (np.asarray(e.linaddr)[idx] == lin).all()
    for i, g in enumerate(idx.tolist()):
        assert int(e.secs[g]) == int(secs[i])
    e.valid[idx] = False
    assert (e.secs[idx] == 0).all()  # invalid entries read ENCLAVESECS 0
    for name in ("linaddr", "secs"):
        getattr(e, name)[idx] = 0
    assert not hm.epc.epcm.valid[host].any()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offset=st.integers(0x10_0000, 0x20_0000), data=st.binary(min_size=1, max_size=3 * PAGE_SIZE))
def test_guest_ram_is_vmm_memory(guest: Guest, offset: int, data: bytes) -> None:
    gm, vm = guest.vm.machine, guest.vm
    gm.dram.write(offset, data)
    assert gm.dram.read(offset, len(data)) == data
    hpa = vm.ram_hpa(offset, False)
    first = min(len(data), PAGE_SIZE - (offset & (PAGE_SIZE - 1)))
    if any(data[:first]):
        assert hpa is not None and guest.world.machine.dram.read(hpa, first) == data[:first]
    assert vm.proc.read(vm.gpa_to_hva(offset) or 0, len(data)) == data  # the VMM sees it too
    gm.dram.write(offset, bytes(len(data)))

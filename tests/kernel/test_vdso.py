"""__vdso_sgx_enter_enclave: argument checks, EEXIT, transparent AEX handling, exception fixup,
the user handler protocol, and one thread per TCS."""

from __future__ import annotations

import ctypes

import pytest
from tests.kernel.kernel_helpers import (
    CODE,
    DATA2,
    OP_EACCEPT,
    OP_GET_ADDR,
    OP_NOP,
    OP_PUT_ADDR,
    OP_TRAP,
    TCS1,
    TCS2,
    Op,
    World,
    build_enclave,
    make_world,
)

from sgxsim.hw.arch import PAGE_SIZE, PageType, SecinfoFlags, Vector, secinfo_flags
from sgxsim.kernel import uapi as U  # noqa: N812
from sgxsim.kernel.process import ProcessSignal
from sgxsim.kernel.vdso import SIGTRAP, VDSO_AEP


def test_invalid_function_and_reserved(world: World) -> None:
    p = world.proc()
    encl = build_enclave(p)
    run = U.sgx_enclave_run(tcs=encl.base)
    for fn in (0, 1, U.EEXIT, 7):
        assert p.vdso_sgx_enter_enclave(0, 0, 0, fn, 0, 0, run) == -U.EINVAL
    run.reserved[26] = 1
    assert p.vdso_sgx_enter_enclave(encl.op_addr, 0, 0, U.EENTER, 0, 0, run) == -U.EINVAL
    assert ctypes.sizeof(run) == 256


def test_eexit_and_both_tcs(world: World) -> None:
    p = world.proc()
    encl = build_enclave(p)
    for tcs in (TCS1, TCS2):
        ret, _, run = encl.call(Op(type=OP_NOP), tcs=tcs)
        assert ret == 0 and run.function == U.EEXIT
        assert (run.exception_vector, run.exception_error_code, run.exception_addr) == (0, 0, 0)
    assert p.last_exit is not None and p.last_exit.rcx == VDSO_AEP


def test_user_handler_called_on_eexit(world: World) -> None:
    p = world.proc()
    encl = build_enclave(p)
    calls: list[tuple[int, int]] = []

    def handler(rdi: int, rsi: int, rdx: int, ursp: int, r8: int, r9: int, run: U.sgx_enclave_run) -> int:
        calls.append((rdi, run.function))
        run.user_data = 0
        return 0

    run = U.sgx_enclave_run(user_data=0xDEADBEEF)
    run.user_handler = handler
    ret, _, run = encl.call(Op(type=OP_NOP), run=run)
    assert ret == 0 and run.user_data == 0 and calls == [(encl.op_addr, U.EEXIT)]
    # Negative results are passed through; positive ones re-enter with that leaf.
    seq = iter([U.EENTER, -7])
    run.user_handler = lambda *a: next(seq)
    ret, _, _ = encl.call(Op(type=OP_NOP), run=run)
    assert ret == -7
    run.user_handler = lambda *a: 9
    assert encl.call(Op(type=OP_NOP), run=run)[0] == -U.EINVAL
    # An int handler must be a registered function.
    run.user_handler = p.register_function(lambda *a: -3)
    assert encl.call(Op(type=OP_NOP), run=run)[0] == -3


def test_run_by_user_address(world: World) -> None:
    p = world.proc()
    encl = build_enclave(p)
    addr = p.alloc(bytes(U.sgx_enclave_run(tcs=encl.base)))
    p.write(encl.op_addr, bytes(Op(type=OP_NOP)))
    assert p.vdso_sgx_enter_enclave(encl.op_addr, 0, 0, U.EENTER, 0, 0, addr) == 0
    back = U.sgx_enclave_run.from_buffer_copy(p.read(addr, 256))
    assert back.function == U.EEXIT


def test_pte_permission_fault_reported_and_eresume_completes(world: World) -> None:
    p = world.proc()
    encl = build_enclave(p)
    page = encl.base + DATA2
    ret, _, run = encl.call(Op(type=OP_PUT_ADDR, value=1, addr=page))
    assert run.function == U.EEXIT
    p.mprotect(page, PAGE_SIZE, U.PROT_READ)
    ret, _, run = encl.call(Op(type=OP_PUT_ADDR, value=0x99, addr=page))
    assert ret == 0 and run.function == U.ERESUME
    assert (run.exception_vector, run.exception_error_code, run.exception_addr) == (14, 0x7, page)
    p.mprotect(page, PAGE_SIZE, U.PROT_READ | U.PROT_WRITE)
    run.exception_vector = run.exception_error_code = run.exception_addr = 0
    assert p.vdso_sgx_enter_enclave(0, 0, 0, U.ERESUME, 0, 0, run) == 0 and run.function == U.EEXIT
    ret, out, run = encl.call(Op(type=OP_GET_ADDR, addr=page))
    assert out.value == 0x99


def test_epcm_fault_has_sgx_bit(world: World) -> None:
    p = world.proc()
    encl = build_enclave(p)
    page = encl.base + DATA2
    r = U.sgx_enclave_restrict_permissions(offset=DATA2, length=PAGE_SIZE, permissions=U.PROT_READ)
    p.ioctl(encl.fd, U.SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS, r)
    flags = secinfo_flags(PageType.PT_REG, 1, int(SecinfoFlags.PR))
    ret, out, run = encl.call(Op(type=OP_EACCEPT, addr=page, flags=flags))
    assert ret == 0 and run.function == U.EEXIT and out.ret == 0
    _ret, _, run = encl.call(Op(type=OP_PUT_ADDR, value=5, addr=page))
    assert run.function == U.ERESUME and run.exception_vector == 14
    assert run.exception_error_code == 0x8007 and run.exception_addr == page


def test_not_present_faults_are_transparent_eldu(world: World) -> None:
    """Zap every PTE and evict every page: EENTER faults on the TCS (fixed: ELDU, retried),
    enclave accesses fault (fixed: ELDU + ERESUME) — the caller sees a clean EEXIT."""
    p = world.proc()
    encl = build_enclave(p)
    encl.put(0x1234)
    k = world.kernel
    for pte in p.mm.ptes.values():
        pte.accessed = False
    while not k.lists.empty(k.sgx_active_page_list):
        k.sgx_reclaim_pages()
    e = p.file(encl.fd).private_data
    assert e.secs_epc < 0
    assert encl.get() == 0x1234
    assert k.stats["eldu"] > 3


def test_eaug_via_enclave_write_then_eaccept(world: World) -> None:
    """Selftest 'augment': write to a hole -> EAUG (fixed), then the PENDING EPCM fault 0x8007."""
    p = world.proc()
    encl = build_enclave(p, extra_size=PAGE_SIZE)
    hole = encl.base + encl.size - PAGE_SIZE
    p.mmap(hole, PAGE_SIZE, U.PROT_READ | U.PROT_WRITE | U.PROT_EXEC, U.MAP_SHARED | U.MAP_FIXED, encl.fd, 0)
    ret, _, run = encl.call(Op(type=OP_PUT_ADDR, value=0xAA, addr=hole))
    assert (
        ret == 0
        and run.function == U.ERESUME
        and (run.exception_vector, run.exception_error_code) == (14, 0x8007)
    )
    flags = secinfo_flags(PageType.PT_REG, 3, int(SecinfoFlags.PENDING))
    _ret, out, run2 = encl.call(Op(type=OP_EACCEPT, addr=hole, flags=flags), tcs=TCS2)
    assert run2.function == U.EEXIT and out.ret == 0
    assert p.vdso_sgx_enter_enclave(0, 0, 0, U.ERESUME, 0, 0, run) == 0 and run.function == U.EEXIT
    assert encl.call(Op(type=OP_GET_ADDR, addr=hole))[1].value == 0xAA


def test_sigbus_in_enclave_is_reported_not_signalled() -> None:
    w = make_world(256, sgx2=False)
    p = w.proc()
    encl = build_enclave(p, extra_size=PAGE_SIZE)
    hole = encl.base + encl.size - PAGE_SIZE
    p.mmap(hole, PAGE_SIZE, U.PROT_READ | U.PROT_WRITE, U.MAP_SHARED | U.MAP_FIXED, encl.fd, 0)
    ret, _, run = encl.call(Op(type=OP_PUT_ADDR, value=1, addr=hole))
    assert ret == 0 and run.function == U.ERESUME
    assert (run.exception_vector, run.exception_error_code, run.exception_addr) == (14, 0x6, hole)
    assert not p.signals
    w.teardown()


def test_enclu_fault_reports_the_leaf(world: World) -> None:
    p = world.proc()
    encl = build_enclave(p)
    # The code page is mapped RX: EENTER's write access to a "TCS" there is refused by the kernel
    # (not present, write, VMA not writable) and reported as it is.
    run = U.sgx_enclave_run(tcs=encl.base + CODE)
    p.write(encl.op_addr, bytes(Op(type=OP_NOP)))
    assert p.vdso_sgx_enter_enclave(encl.op_addr, 0, 0, U.EENTER, 0, 0, run) == 0
    assert (run.function, run.exception_vector, run.exception_error_code) == (U.EENTER, 14, 0x6)
    run = U.sgx_enclave_run(tcs=encl.base + DATA2)  # RW, present after the fix-up, but not a TCS
    p.write(encl.op_addr, bytes(Op(type=OP_NOP)))
    assert p.vdso_sgx_enter_enclave(encl.op_addr, 0, 0, U.EENTER, 0, 0, run) == 0
    assert run.function == U.EENTER and run.exception_vector == 14
    assert run.exception_error_code == 0x8007 and run.exception_addr == encl.base + DATA2
    # ERESUME with CSSA == 0 is #GP.
    run.tcs = encl.base
    assert p.vdso_sgx_enter_enclave(0, 0, 0, U.ERESUME, 0, 0, run) == 0
    assert run.function == U.ERESUME and run.exception_vector == 13


def test_interrupt_aex_is_transparent(world: World) -> None:
    p = world.proc()
    encl = build_enclave(p)
    fired: list[object] = []

    def step(lp):  # type: ignore[no-untyped-def]
        if not fired:
            fired.append(lp.id)
            lp.pending_interrupt = True

    world.machine.on_enclave_step = step
    try:
        encl.put(0x77)
    finally:
        world.machine.on_enclave_step = None
    assert fired and world.machine.cpus[0].stats.get("AEX", 0) >= 1
    assert encl.get() == 0x77


def test_trap_vectors(world: World) -> None:
    p = world.proc()
    encl = build_enclave(p)
    ret, _, run = encl.call(Op(type=OP_TRAP, value=Vector.UD))
    assert ret == 0 and run.function == U.ERESUME and run.exception_vector == Vector.UD
    # The same TCS can be re-entered (ERESUME finishes the op).
    assert p.vdso_sgx_enter_enclave(0, 0, 0, U.ERESUME, 0, 0, run) == 0 and run.function == U.EEXIT
    with pytest.raises(ProcessSignal) as exc:
        encl.call(Op(type=OP_TRAP, value=Vector.BP))
    assert exc.value.info.signo == SIGTRAP
    # Clean up the suspended frame so that the TCS is usable again.
    run2 = U.sgx_enclave_run(tcs=encl.base)
    assert p.vdso_sgx_enter_enclave(0, 0, 0, U.ERESUME, 0, 0, run2) == 0


def test_one_thread_per_tcs(world: World) -> None:
    p = world.proc()
    encl = build_enclave(p)
    inner: list[U.sgx_enclave_run] = []

    def step(lp):  # type: ignore[no-untyped-def]
        if lp.id == 0 and not inner:
            r = U.sgx_enclave_run(tcs=encl.base + TCS1)
            inner.append(r)
            p.vdso_sgx_enter_enclave(encl.op_addr, 0, 0, U.EENTER, 0, 0, r, cpu=1)
            r2 = U.sgx_enclave_run(tcs=encl.base + TCS2)
            inner.append(r2)
            p.vdso_sgx_enter_enclave(encl.op_addr, 0, 0, U.EENTER, 0, 0, r2, cpu=1)

    world.machine.on_enclave_step = step
    try:
        encl.put(3)
    finally:
        world.machine.on_enclave_step = None
    assert inner[0].function == U.EENTER and inner[0].exception_vector == Vector.GP
    assert inner[1].function == U.EEXIT
    assert encl.get() == 3

"""The Linux kernel SGX selftests (tools/testing/selftests/sgx/main.c), ported to sgxsim.

Every ``TEST_F(enclave, ...)`` of main.c is here under its own name, with the same steps and
the same assertions (return values, errno, ``count``/``result``, ``run.function``, exception
vector / error code / address, ERESUME completing the faulting access). The fixture does what
``setup_test_encl`` does: load the selftest enclave (:mod:`sgxsim.sdk.test_encl`) through the
real ioctl path and map its segments; ``ENCL_CALL`` enters through the vDSO.

The machine has a small EPC (128 pages: above the reclaimer's 32/64-page watermarks), so the
two oversubscribed tests, whose heap is the whole EPC, run the reclaimer (EWB) and the fault
path's ELDU; the port checks that they did (an assertion the C tests cannot make).

Models: tools/testing/selftests/sgx/main.c (mid-2025 mainline: 16 TEST_Fs), load.c, main.h.
"""

from __future__ import annotations

import ctypes
import errno
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from sgxsim.hw.arch import (
    PAGE_SIZE,
    SGX_CPUID,
    SGX_CPUID_EPC,
    SGX_CPUID_EPC_INVALID,
    SGX_CPUID_EPC_MASK,
    SGX_CPUID_EPC_SECTION,
    PageType,
    SecinfoFlags,
    sgx_calc_section_metric,
)
from sgxsim.hw.epc import EpcSectionConfig
from sgxsim.hw.machine import DEFAULT_EPC_BASE, Machine, MachineConfig
from sgxsim.kernel.main import Kernel
from sgxsim.kernel.process import Process
from sgxsim.kernel.uapi import (
    EENTER,
    EEXIT,
    ERESUME,
    MAP_FIXED,
    MAP_SHARED,
    PROT_EXEC,
    PROT_READ,
    PROT_WRITE,
    SGX_IOC_ENCLAVE_MODIFY_TYPES,
    SGX_IOC_ENCLAVE_REMOVE_PAGES,
    SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS,
    sgx_enclave_modify_types,
    sgx_enclave_remove_pages,
    sgx_enclave_restrict_permissions,
    sgx_enclave_run,
)
from sgxsim.rand import Rng
from sgxsim.sdk.loader import Enclave, load_enclave
from sgxsim.sdk.sign import generate_signing_key
from sgxsim.sdk.test_encl import (
    ENCL_HEAP_SIZE_DEFAULT,
    EnclOp,
    build_test_encl,
    encl_get_data_offset,
    encl_get_entry,
    encl_get_tcs_offset,
    encl_op_eaccept,
    encl_op_emodpe,
    encl_op_get_from_addr,
    encl_op_get_from_buf,
    encl_op_header,
    encl_op_init_tcs_page,
    encl_op_put_to_addr,
    encl_op_put_to_buf,
)

MAGIC = 0x1122334455667788
MAGIC2 = 0x8877665544332211

# enum sgx_secinfo_page_state (main.c) and the SECINFO flag names the tests use.
SGX_SECINFO_R = int(SecinfoFlags.R)
SGX_SECINFO_W = int(SecinfoFlags.W)
SGX_SECINFO_PENDING = int(SecinfoFlags.PENDING)
SGX_SECINFO_MODIFIED = int(SecinfoFlags.MODIFIED)
SGX_SECINFO_PR = int(SecinfoFlags.PR)
SGX_SECINFO_REG = int(PageType.PT_REG) << 8
SGX_SECINFO_TCS = int(PageType.PT_TCS) << 8
SGX_SECINFO_TRIM = int(PageType.PT_TRIM) << 8
SGX_PAGE_TYPE_TCS = int(PageType.PT_TCS)
SGX_PAGE_TYPE_TRIM = int(PageType.PT_TRIM)

#: EPC of the test machine: 128 pages, above SGX_NR_HIGH_PAGES (64).
EPC_PAGES = 128


@pytest.fixture(scope="module")
def sign_key() -> rsa.RSAPrivateKey:
    return generate_signing_key(Rng(2016).stream("keys"))


@dataclass
class Self:
    """FIXTURE(enclave) {struct encl encl; struct sgx_enclave_run run;} plus the platform."""

    machine: Machine
    kernel: Kernel
    proc: Process
    key: rsa.RSAPrivateKey
    encl: Enclave | None = None
    run: sgx_enclave_run = None  # type: ignore[assignment]


def make_platform(key: rsa.RSAPrivateKey, *, sgx2: bool = True) -> Self:
    config = MachineConfig(
        epc_sections=(EpcSectionConfig(DEFAULT_EPC_BASE, EPC_PAGES * PAGE_SIZE, 0),), sgx2=sgx2
    )
    machine = Machine(config, Rng(1))
    kernel = Kernel(machine)
    return Self(machine, kernel, Process(kernel, "test_sgx"), key, run=sgx_enclave_run())


@pytest.fixture
def self_(sign_key: rsa.RSAPrivateKey) -> Iterator[Self]:
    s = make_platform(sign_key)
    yield s
    # FIXTURE_TEARDOWN: encl_delete; and no kernel WARN may have fired during the test.
    if s.encl is not None:
        s.encl.close()
    assert s.kernel.log.warn_count == 0, s.kernel.log.format()


# --------------------------------------------------------------------------------------------
# Harness (main.c helpers)


def setup_test_encl(heap_size: int, s: Self) -> bool:
    s.encl = load_enclave(s.proc, build_test_encl(heap_size), key=s.key)
    return True


def ENCL_CALL(op: ctypes.Structure, run: sgx_enclave_run, clobbered: bool, s: Self) -> int:
    """main.c ENCL_CALL: both variants enter through __vdso_sgx_enter_enclave with run->tcs."""
    assert s.encl is not None
    return s.encl.call_op(op, None, run, function=EENTER)


def vdso_sgx_enter_enclave(op: ctypes.Structure, function: int, run: sgx_enclave_run, s: Self) -> int:
    assert s.encl is not None
    return s.encl.call_op(op, None, run, function=function)


def EXPECT_EEXIT(run: sgx_enclave_run) -> None:
    assert run.function == EEXIT, (
        f"{run.exception_vector:#04x} {run.exception_error_code:#04x} {run.exception_addr:#018x}"
    )


def EXPECT_NO_EXCEPTION(run: sgx_enclave_run) -> None:
    assert (run.exception_vector, run.exception_error_code, run.exception_addr) == (0, 0, 0)


def clear_exception(run: sgx_enclave_run) -> None:
    run.exception_vector = 0
    run.exception_error_code = 0
    run.exception_addr = 0


def get_total_epc_mem(machine: Machine) -> int:
    """main.c get_total_epc_mem: sum of the CPUID-enumerated EPC sections."""
    total = 0
    section = 0
    while True:
        eax, _ebx, ecx, edx = machine.cpuid(SGX_CPUID, section + SGX_CPUID_EPC)
        kind = eax & SGX_CPUID_EPC_MASK
        if kind == SGX_CPUID_EPC_INVALID or kind != SGX_CPUID_EPC_SECTION:
            break
        total += sgx_calc_section_metric(ecx, edx)
        section += 1
    return total


def sgx2_supported(machine: Machine) -> bool:
    eax, _, _, _ = machine.cpuid(SGX_CPUID, 0)
    return bool(eax & 0x2)


def ioctl_errno(s: Self, request: int, arg: ctypes.Structure) -> int:
    """``ret = ioctl(fd, request, &arg); errno_save = ret == -1 ? errno : 0``."""
    assert s.encl is not None
    try:
        ret = s.proc.ioctl(s.encl.fd, request, arg)
    except OSError as exc:
        return exc.errno or -1
    assert ret == 0
    return 0


def sgx2_probe(s: Self, request: int = SGX_IOC_ENCLAVE_MODIFY_TYPES) -> None:
    """The SGX2 probe: a zeroed MODIFY_TYPES/RESTRICT_PERMISSIONS must fail; ENOTTY/ENODEV skip."""
    arg: ctypes.Structure = (
        sgx_enclave_modify_types()
        if request == SGX_IOC_ENCLAVE_MODIFY_TYPES
        else sgx_enclave_restrict_permissions()
    )
    err = ioctl_errno(s, request, arg)
    if err == errno.ENOTTY:
        pytest.skip("Kernel does not support the SGX2 ioctl()")
    elif err == errno.ENODEV:
        pytest.skip("System does not support SGX2")
    # Invalid parameters were provided during the sanity check: expect the command to fail.
    assert err != 0


def data_offset(s: Self) -> int:
    assert s.encl is not None
    return encl_get_data_offset(s.encl.image)


def total_size(s: Self) -> int:
    assert s.encl is not None
    return sum(seg.size for seg in s.encl.segments)


def put_get_buffer(s: Self, clobbered: bool) -> None:
    put_op = encl_op_put_to_buf()
    put_op.header.type = EnclOp.ENCL_OP_PUT_TO_BUFFER
    put_op.value = MAGIC
    assert ENCL_CALL(put_op, s.run, clobbered, s) == 0
    EXPECT_EEXIT(s.run)
    EXPECT_NO_EXCEPTION(s.run)
    assert s.run.user_data == 0

    get_op = encl_op_get_from_buf()
    get_op.header.type = EnclOp.ENCL_OP_GET_FROM_BUFFER
    get_op.value = 0
    assert ENCL_CALL(get_op, s.run, clobbered, s) == 0
    assert get_op.value == MAGIC
    EXPECT_EEXIT(s.run)
    EXPECT_NO_EXCEPTION(s.run)
    assert s.run.user_data == 0


def put_get_address(s: Self, addr: int, value: int = MAGIC) -> None:
    put_addr_op = encl_op_put_to_addr()
    put_addr_op.value = value
    put_addr_op.addr = addr
    put_addr_op.header.type = EnclOp.ENCL_OP_PUT_TO_ADDRESS
    assert ENCL_CALL(put_addr_op, s.run, True, s) == 0
    EXPECT_EEXIT(s.run)
    EXPECT_NO_EXCEPTION(s.run)

    get_addr_op = encl_op_get_from_addr()
    get_addr_op.value = 0
    get_addr_op.addr = addr
    get_addr_op.header.type = EnclOp.ENCL_OP_GET_FROM_ADDRESS
    assert ENCL_CALL(get_addr_op, s.run, True, s) == 0
    assert get_addr_op.value == value
    EXPECT_EEXIT(s.run)
    EXPECT_NO_EXCEPTION(s.run)


def eaccept(s: Self, addr: int, flags: int, *, expect_ret: int = 0) -> None:
    eaccept_op = encl_op_eaccept()
    eaccept_op.epc_addr = addr
    eaccept_op.flags = flags
    eaccept_op.ret = 0
    eaccept_op.header.type = EnclOp.ENCL_OP_EACCEPT
    assert ENCL_CALL(eaccept_op, s.run, True, s) == 0
    EXPECT_EEXIT(s.run)
    EXPECT_NO_EXCEPTION(s.run)
    assert eaccept_op.ret == expect_ret


def modify_types(s: Self, offset: int, length: int, page_type: int) -> sgx_enclave_modify_types:
    ioc = sgx_enclave_modify_types()
    ioc.offset = offset
    ioc.length = length
    ioc.page_type = page_type
    assert ioctl_errno(s, SGX_IOC_ENCLAVE_MODIFY_TYPES, ioc) == 0
    assert ioc.result == 0
    assert ioc.count == length
    return ioc


# --------------------------------------------------------------------------------------------
# The 16 TEST_Fs


def test_unclobbered_vdso(self_: Self) -> None:
    s = self_
    assert setup_test_encl(ENCL_HEAP_SIZE_DEFAULT, s)
    assert s.encl is not None
    s.run.tcs = s.encl.base
    put_get_buffer(s, clobbered=False)


def test_unclobbered_vdso_oversubscribed(self_: Self) -> None:
    s = self_
    total_mem = get_total_epc_mem(s.machine)
    assert total_mem == EPC_PAGES * PAGE_SIZE
    assert setup_test_encl(total_mem, s)
    assert s.encl is not None
    # The enclave (image + heap + SECS + VA) is larger than the EPC: building it paged out.
    assert s.machine.stats.get("EWB", 0) > 0
    s.run.tcs = s.encl.base
    put_get_buffer(s, clobbered=False)
    # The entries touched evicted pages (TCS, code, data): the fault handler ran ELDU.
    assert s.machine.stats.get("ELDU", 0) > 0


def test_unclobbered_vdso_oversubscribed_remove(self_: Self) -> None:
    s = self_
    total_mem = get_total_epc_mem(s.machine)
    assert total_mem != 0
    assert setup_test_encl(total_mem, s)
    assert s.encl is not None
    sgx2_probe(s)
    s.run.tcs = s.encl.base
    heap = s.encl.segments[-1]
    put_get_buffer(s, clobbered=False)

    # Trim the entire heap.
    modify_types(s, heap.offset, heap.size, SGX_PAGE_TYPE_TRIM)

    # EACCEPT all removed pages.
    addr = s.encl.base + heap.offset
    eaccept_op = encl_op_eaccept()
    eaccept_op.flags = SGX_SECINFO_TRIM | SGX_SECINFO_MODIFIED
    eaccept_op.header.type = EnclOp.ENCL_OP_EACCEPT
    for i in range(0, heap.size, PAGE_SIZE):
        eaccept_op.epc_addr = addr + i
        eaccept_op.ret = 0
        assert ENCL_CALL(eaccept_op, s.run, True, s) == 0
        EXPECT_NO_EXCEPTION(s.run)
        assert eaccept_op.ret == 0
        assert s.run.function == EEXIT

    # Complete page removal.
    remove_ioc = sgx_enclave_remove_pages()
    remove_ioc.offset = heap.offset
    remove_ioc.length = heap.size
    assert ioctl_errno(s, SGX_IOC_ENCLAVE_REMOVE_PAGES, remove_ioc) == 0
    assert remove_ioc.count == heap.size
    assert s.machine.stats.get("ELDU", 0) > 0


def test_clobbered_vdso(self_: Self) -> None:
    s = self_
    assert setup_test_encl(ENCL_HEAP_SIZE_DEFAULT, s)
    assert s.encl is not None
    s.run.tcs = s.encl.base
    put_get_buffer(s, clobbered=True)


def test_handler(rdi: int, rsi: int, rdx: int, ursp: int, r8: int, r9: int, run: sgx_enclave_run) -> int:
    run.user_data = 0
    return 0


test_handler.__test__ = False  # type: ignore[attr-defined]  # main.c's handler, not a test


def test_clobbered_vdso_and_user_function(self_: Self) -> None:
    s = self_
    assert setup_test_encl(ENCL_HEAP_SIZE_DEFAULT, s)
    assert s.encl is not None
    s.run.tcs = s.encl.base
    s.run.user_handler = test_handler
    s.run.user_data = 0xDEADBEEF
    put_op = encl_op_put_to_buf()
    put_op.header.type = EnclOp.ENCL_OP_PUT_TO_BUFFER
    put_op.value = MAGIC
    assert ENCL_CALL(put_op, s.run, True, s) == 0
    EXPECT_EEXIT(s.run)
    assert s.run.user_data == 0

    s.run.user_data = 0xDEADBEEF  # (not in main.c) show the handler runs on every call
    get_op = encl_op_get_from_buf()
    get_op.header.type = EnclOp.ENCL_OP_GET_FROM_BUFFER
    get_op.value = 0
    assert ENCL_CALL(get_op, s.run, True, s) == 0
    assert get_op.value == MAGIC
    EXPECT_EEXIT(s.run)
    assert s.run.user_data == 0


def test_tcs_entry(self_: Self) -> None:
    s = self_
    assert setup_test_encl(ENCL_HEAP_SIZE_DEFAULT, s)
    assert s.encl is not None
    s.run.tcs = s.encl.base
    op = encl_op_header()
    op.type = EnclOp.ENCL_OP_NOP
    assert ENCL_CALL(op, s.run, True, s) == 0
    EXPECT_EEXIT(s.run)
    EXPECT_NO_EXCEPTION(s.run)

    # Move to the next TCS.
    s.run.tcs = s.encl.base + PAGE_SIZE
    assert ENCL_CALL(op, s.run, True, s) == 0
    EXPECT_EEXIT(s.run)
    EXPECT_NO_EXCEPTION(s.run)


def test_pte_permissions(self_: Self) -> None:
    s = self_
    assert setup_test_encl(ENCL_HEAP_SIZE_DEFAULT, s)
    assert s.encl is not None
    s.run.tcs = s.encl.base
    data_start = s.encl.base + data_offset(s) + PAGE_SIZE

    put_get_address(s, data_start)

    # Change PTE permissions of the target page within the enclave.
    s.proc.mprotect(data_start, PAGE_SIZE, PROT_READ)

    # PTE read-only, EPCM still RW: writing gives a regular #PF (no SGX bit).
    put_addr_op = encl_op_put_to_addr()
    put_addr_op.value = MAGIC2
    put_addr_op.addr = data_start
    put_addr_op.header.type = EnclOp.ENCL_OP_PUT_TO_ADDRESS
    assert ENCL_CALL(put_addr_op, s.run, True, s) == 0
    assert s.run.exception_vector == 14
    assert s.run.exception_error_code == 0x7
    assert s.run.exception_addr == data_start
    clear_exception(s.run)

    # Restore RW and resume: the write completes.
    s.proc.mprotect(data_start, PAGE_SIZE, PROT_READ | PROT_WRITE)
    assert vdso_sgx_enter_enclave(put_addr_op, ERESUME, s.run, s) == 0
    EXPECT_EEXIT(s.run)
    EXPECT_NO_EXCEPTION(s.run)

    get_addr_op = encl_op_get_from_addr()
    get_addr_op.value = 0
    get_addr_op.addr = data_start
    get_addr_op.header.type = EnclOp.ENCL_OP_GET_FROM_ADDRESS
    assert ENCL_CALL(get_addr_op, s.run, True, s) == 0
    assert get_addr_op.value == MAGIC2
    EXPECT_EEXIT(s.run)
    EXPECT_NO_EXCEPTION(s.run)


def test_tcs_permissions(self_: Self) -> None:
    s = self_
    assert setup_test_encl(ENCL_HEAP_SIZE_DEFAULT, s)
    assert s.encl is not None
    s.run.tcs = s.encl.base
    ioc = sgx_enclave_restrict_permissions()
    err = ioctl_errno(s, SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS, ioc)
    assert err != 0
    if err == errno.ENOTTY:
        pytest.skip("Kernel does not support SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS ioctl()")
    elif err == errno.ENODEV:
        pytest.skip("System does not support SGX2")

    # Making the TCS page read-only is not allowed.
    ioc.offset = encl_get_tcs_offset(s.encl.image)
    ioc.length = PAGE_SIZE
    ioc.permissions = SGX_SECINFO_R
    assert ioctl_errno(s, SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS, ioc) == errno.EINVAL
    assert ioc.result == 0
    assert ioc.count == 0


def test_epcm_permissions(self_: Self) -> None:
    s = self_
    assert setup_test_encl(ENCL_HEAP_SIZE_DEFAULT, s)
    assert s.encl is not None
    s.run.tcs = s.encl.base
    sgx2_probe(s, SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS)
    data_start = s.encl.base + data_offset(s) + PAGE_SIZE

    put_get_address(s, data_start)

    # Change the EPCM permissions to read-only; the kernel still considers the page writable.
    restrict_ioc = sgx_enclave_restrict_permissions()
    restrict_ioc.offset = data_offset(s) + PAGE_SIZE
    restrict_ioc.length = PAGE_SIZE
    restrict_ioc.permissions = SGX_SECINFO_R
    assert ioctl_errno(s, SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS, restrict_ioc) == 0
    assert restrict_ioc.result == 0
    assert restrict_ioc.count == 4096

    # EPCM permissions changed from the kernel: EACCEPT from the enclave.
    eaccept(s, data_start, SGX_SECINFO_R | SGX_SECINFO_REG | SGX_SECINFO_PR)

    # The EPCM says read-only: writing is an EPCM #PF (SGX bit set).
    put_addr_op = encl_op_put_to_addr()
    put_addr_op.value = MAGIC2
    put_addr_op.addr = data_start
    put_addr_op.header.type = EnclOp.ENCL_OP_PUT_TO_ADDRESS
    assert ENCL_CALL(put_addr_op, s.run, True, s) == 0
    assert s.run.function == ERESUME
    assert s.run.exception_vector == 14
    assert s.run.exception_error_code == 0x8007
    assert s.run.exception_addr == data_start
    clear_exception(s.run)

    # Enter through the other TCS and make the page writable again with EMODPE.
    s.run.tcs = s.encl.base + PAGE_SIZE
    emodpe_op = encl_op_emodpe()
    emodpe_op.epc_addr = data_start
    emodpe_op.flags = SGX_SECINFO_R | SGX_SECINFO_W
    emodpe_op.header.type = EnclOp.ENCL_OP_EMODPE
    assert ENCL_CALL(emodpe_op, s.run, True, s) == 0
    EXPECT_EEXIT(s.run)
    EXPECT_NO_EXCEPTION(s.run)

    # Resume in the main TCS: the faulting write is retried and succeeds.
    s.run.tcs = s.encl.base
    assert vdso_sgx_enter_enclave(put_addr_op, ERESUME, s.run, s) == 0
    EXPECT_EEXIT(s.run)
    EXPECT_NO_EXCEPTION(s.run)

    get_addr_op = encl_op_get_from_addr()
    get_addr_op.value = 0
    get_addr_op.addr = data_start
    get_addr_op.header.type = EnclOp.ENCL_OP_GET_FROM_ADDRESS
    assert ENCL_CALL(get_addr_op, s.run, True, s) == 0
    assert get_addr_op.value == MAGIC2
    EXPECT_EEXIT(s.run)
    assert s.run.user_data == 0
    EXPECT_NO_EXCEPTION(s.run)


def test_augment(self_: Self) -> None:
    s = self_
    if not sgx2_supported(s.machine):
        pytest.skip("SGX2 not supported")
    assert setup_test_encl(ENCL_HEAP_SIZE_DEFAULT, s)
    assert s.encl is not None
    s.run.tcs = s.encl.base
    size = total_size(s)
    assert size + PAGE_SIZE < s.encl.size

    # A new mapping in the ELRANGE hole: any permissions are allowed there.
    addr = s.proc.mmap(
        s.encl.base + size,
        PAGE_SIZE,
        PROT_READ | PROT_WRITE | PROT_EXEC,
        MAP_SHARED | MAP_FIXED,
        s.encl.fd,
        0,
    )
    assert addr == s.encl.base + size
    clear_exception(s.run)

    # Fault #1 EAUGs the page; fault #2 is the EPCM's PENDING check (SGX bit set).
    put_addr_op = encl_op_put_to_addr()
    put_addr_op.value = MAGIC
    put_addr_op.addr = addr
    put_addr_op.header.type = EnclOp.ENCL_OP_PUT_TO_ADDRESS
    assert ENCL_CALL(put_addr_op, s.run, True, s) == 0
    assert s.run.function == ERESUME
    assert s.run.exception_vector == 14
    assert s.run.exception_addr == addr
    if s.run.exception_error_code == 0x6:
        s.proc.munmap(addr, PAGE_SIZE)
        pytest.skip("Kernel does not support adding pages to initialized enclave")
    assert s.run.exception_error_code == 0x8007
    clear_exception(s.run)

    # Handle the AEX by running EACCEPT from the other entry point.
    s.run.tcs = s.encl.base + PAGE_SIZE
    eaccept(s, s.encl.base + size, SGX_SECINFO_R | SGX_SECINFO_W | SGX_SECINFO_REG | SGX_SECINFO_PENDING)

    # Return to the main TCS and resume.
    s.run.tcs = s.encl.base
    assert vdso_sgx_enter_enclave(put_addr_op, ERESUME, s.run, s) == 0
    EXPECT_EEXIT(s.run)
    EXPECT_NO_EXCEPTION(s.run)

    get_addr_op = encl_op_get_from_addr()
    get_addr_op.value = 0
    get_addr_op.addr = addr
    get_addr_op.header.type = EnclOp.ENCL_OP_GET_FROM_ADDRESS
    assert ENCL_CALL(get_addr_op, s.run, True, s) == 0
    assert get_addr_op.value == MAGIC
    EXPECT_EEXIT(s.run)
    EXPECT_NO_EXCEPTION(s.run)
    s.proc.munmap(addr, PAGE_SIZE)


def test_augment_via_eaccept(self_: Self) -> None:
    s = self_
    if not sgx2_supported(s.machine):
        pytest.skip("SGX2 not supported")
    assert setup_test_encl(ENCL_HEAP_SIZE_DEFAULT, s)
    assert s.encl is not None
    s.run.tcs = s.encl.base
    size = total_size(s)
    assert size + PAGE_SIZE < s.encl.size
    addr = s.proc.mmap(
        s.encl.base + size,
        PAGE_SIZE,
        PROT_READ | PROT_WRITE | PROT_EXEC,
        MAP_SHARED | MAP_FIXED,
        s.encl.fd,
        0,
    )
    assert addr == s.encl.base + size
    clear_exception(s.run)

    # EACCEPT on the new page: #PF -> EAUG -> EACCEPT again, invisible to user space.
    eaccept_op = encl_op_eaccept()
    eaccept_op.epc_addr = s.encl.base + size
    eaccept_op.flags = SGX_SECINFO_R | SGX_SECINFO_W | SGX_SECINFO_REG | SGX_SECINFO_PENDING
    eaccept_op.ret = 0
    eaccept_op.header.type = EnclOp.ENCL_OP_EACCEPT
    assert ENCL_CALL(eaccept_op, s.run, True, s) == 0
    if (
        s.run.exception_vector == 14
        and s.run.exception_error_code == 4
        and s.run.exception_addr == s.encl.base + size
    ):
        s.proc.munmap(addr, PAGE_SIZE)
        pytest.skip("Kernel does not support adding pages to initialized enclave")
    EXPECT_EEXIT(s.run)
    EXPECT_NO_EXCEPTION(s.run)
    assert eaccept_op.ret == 0

    put_get_address(s, addr)
    s.proc.munmap(addr, PAGE_SIZE)


def test_tcs_create(self_: Self) -> None:
    s = self_
    assert setup_test_encl(ENCL_HEAP_SIZE_DEFAULT, s)
    assert s.encl is not None
    s.run.tcs = s.encl.base
    sgx2_probe(s)

    size = total_size(s)
    assert size + 3 * PAGE_SIZE < s.encl.size
    addr = s.proc.mmap(
        s.encl.base + size, 3 * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, s.encl.fd, 0
    )
    assert addr == s.encl.base + size
    clear_exception(s.run)
    stack_end = s.encl.base + size
    tcs = s.encl.base + size + PAGE_SIZE
    ssa = s.encl.base + size + 2 * PAGE_SIZE

    # EACCEPT each new page: EACCEPT -> #PF -> EAUG -> EACCEPT.
    eaccept_op = encl_op_eaccept()
    eaccept_op.epc_addr = stack_end
    eaccept_op.flags = SGX_SECINFO_R | SGX_SECINFO_W | SGX_SECINFO_REG | SGX_SECINFO_PENDING
    eaccept_op.ret = 0
    eaccept_op.header.type = EnclOp.ENCL_OP_EACCEPT
    assert ENCL_CALL(eaccept_op, s.run, True, s) == 0
    if s.run.exception_vector == 14 and s.run.exception_error_code == 4 and s.run.exception_addr == stack_end:
        s.proc.munmap(addr, 3 * PAGE_SIZE)
        pytest.skip("Kernel does not support adding pages to initialized enclave")
    EXPECT_EEXIT(s.run)
    EXPECT_NO_EXCEPTION(s.run)
    assert eaccept_op.ret == 0
    eaccept(s, ssa, SGX_SECINFO_R | SGX_SECINFO_W | SGX_SECINFO_REG | SGX_SECINFO_PENDING)
    eaccept(s, tcs, SGX_SECINFO_R | SGX_SECINFO_W | SGX_SECINFO_REG | SGX_SECINFO_PENDING)

    # Populate the TCS page from inside the enclave; the new TCS enters at encl_dyn_entry.
    val_64 = encl_get_entry(s.encl.image, "encl_dyn_entry")
    assert val_64 != 0
    init_tcs_page_op = encl_op_init_tcs_page()
    init_tcs_page_op.tcs_page = tcs
    init_tcs_page_op.ssa = size + 2 * PAGE_SIZE
    init_tcs_page_op.entry = val_64
    init_tcs_page_op.header.type = EnclOp.ENCL_OP_INIT_TCS_PAGE
    assert ENCL_CALL(init_tcs_page_op, s.run, True, s) == 0
    EXPECT_EEXIT(s.run)
    EXPECT_NO_EXCEPTION(s.run)

    # Change the page type to TCS and accept it.
    modify_types(s, size + PAGE_SIZE, PAGE_SIZE, SGX_PAGE_TYPE_TCS)
    eaccept(s, tcs, SGX_SECINFO_TCS | SGX_SECINFO_MODIFIED)

    # Run the workload through the new TCS.
    s.run.tcs = tcs
    put_get_buffer(s, clobbered=True)

    # Phase 2: remove the three pages, then reuse the old TCS address as a regular page.
    modify_types(s, size, 3 * PAGE_SIZE, SGX_PAGE_TYPE_TRIM)
    s.run.tcs = s.encl.base
    for page in (stack_end, tcs, ssa):
        eaccept(s, page, SGX_SECINFO_TRIM | SGX_SECINFO_MODIFIED)

    remove_ioc = sgx_enclave_remove_pages()
    remove_ioc.offset = size
    remove_ioc.length = 3 * PAGE_SIZE
    assert ioctl_errno(s, SGX_IOC_ENCLAVE_REMOVE_PAGES, remove_ioc) == 0
    assert remove_ioc.count == 3 * PAGE_SIZE

    # Access where TCS #3 was: a dynamic add of a regular page there.
    eaccept(s, tcs, SGX_SECINFO_R | SGX_SECINFO_W | SGX_SECINFO_REG | SGX_SECINFO_PENDING)
    put_get_address(s, tcs)
    s.proc.munmap(addr, 3 * PAGE_SIZE)


def _trim_second_data_page(s: Self) -> int:
    assert setup_test_encl(ENCL_HEAP_SIZE_DEFAULT, s)
    assert s.encl is not None
    s.run.tcs = s.encl.base
    sgx2_probe(s)
    data_start = s.encl.base + data_offset(s) + PAGE_SIZE
    put_get_address(s, data_start)
    modify_types(s, data_offset(s) + PAGE_SIZE, PAGE_SIZE, SGX_PAGE_TYPE_TRIM)
    return data_start


def _read_removed_page(s: Self, data_start: int) -> None:
    get_addr_op = encl_op_get_from_addr()
    get_addr_op.value = 0
    get_addr_op.addr = data_start
    get_addr_op.header.type = EnclOp.ENCL_OP_GET_FROM_ADDRESS
    assert ENCL_CALL(get_addr_op, s.run, True, s) == 0
    # Present for the kernel, inaccessible for SGX: #PF with the SGX bit.
    assert s.run.function == ERESUME
    assert s.run.exception_vector == 14
    assert s.run.exception_error_code == 0x8005
    assert s.run.exception_addr == data_start


def test_remove_added_page_no_eaccept(self_: Self) -> None:
    s = self_
    _trim_second_data_page(s)
    # Skip EACCEPT, then try to complete the removal: not permitted.
    remove_ioc = sgx_enclave_remove_pages()
    remove_ioc.offset = data_offset(s) + PAGE_SIZE
    remove_ioc.length = PAGE_SIZE
    assert ioctl_errno(s, SGX_IOC_ENCLAVE_REMOVE_PAGES, remove_ioc) == errno.EPERM
    assert remove_ioc.count == 0


def test_remove_added_page_invalid_access(self_: Self) -> None:
    s = self_
    data_start = _trim_second_data_page(s)
    _read_removed_page(s, data_start)


def test_remove_added_page_invalid_access_after_eaccept(self_: Self) -> None:
    s = self_
    data_start = _trim_second_data_page(s)
    eaccept(s, data_start, SGX_SECINFO_TRIM | SGX_SECINFO_MODIFIED)
    # Skip the removal ioctl; read the removed page.
    _read_removed_page(s, data_start)


def test_remove_untouched_page(self_: Self) -> None:
    s = self_
    assert setup_test_encl(ENCL_HEAP_SIZE_DEFAULT, s)
    assert s.encl is not None
    sgx2_probe(s)
    s.run = sgx_enclave_run()
    s.run.tcs = s.encl.base
    data_start = s.encl.base + data_offset(s) + PAGE_SIZE
    modify_types(s, data_offset(s) + PAGE_SIZE, PAGE_SIZE, SGX_PAGE_TYPE_TRIM)
    eaccept(s, data_start, SGX_SECINFO_TRIM | SGX_SECINFO_MODIFIED)
    remove_ioc = sgx_enclave_remove_pages()
    remove_ioc.offset = data_offset(s) + PAGE_SIZE
    remove_ioc.length = PAGE_SIZE
    assert ioctl_errno(s, SGX_IOC_ENCLAVE_REMOVE_PAGES, remove_ioc) == 0
    assert remove_ioc.count == 4096


# --------------------------------------------------------------------------------------------
# The SGX2 probe/skip idiom on an SGX1 machine


def test_sgx2_probe_reports_enodev_on_sgx1(sign_key: rsa.RSAPrivateKey) -> None:
    s = make_platform(sign_key, sgx2=False)
    assert not sgx2_supported(s.machine)
    assert setup_test_encl(ENCL_HEAP_SIZE_DEFAULT, s)
    for request, arg in (
        (SGX_IOC_ENCLAVE_MODIFY_TYPES, sgx_enclave_modify_types()),
        (SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS, sgx_enclave_restrict_permissions()),
    ):
        assert ioctl_errno(s, request, arg) == errno.ENODEV
    with pytest.raises(pytest.skip.Exception, match="does not support SGX2"):
        sgx2_probe(s)
    # SGX1 functionality is unaffected.
    assert s.encl is not None
    s.run.tcs = s.encl.base
    put_get_buffer(s, clobbered=True)
    s.encl.close()


def test_all_sixteen_selftests_are_ported() -> None:
    names = sorted(n[len("test_") :] for n in globals() if n.startswith("test_") and callable(globals()[n]))
    expected = {
        "unclobbered_vdso",
        "unclobbered_vdso_oversubscribed",
        "unclobbered_vdso_oversubscribed_remove",
        "clobbered_vdso",
        "clobbered_vdso_and_user_function",
        "tcs_entry",
        "pte_permissions",
        "tcs_permissions",
        "epcm_permissions",
        "augment",
        "augment_via_eaccept",
        "tcs_create",
        "remove_added_page_no_eaccept",
        "remove_added_page_invalid_access",
        "remove_added_page_invalid_access_after_eaccept",
        "remove_untouched_page",
    }
    assert expected <= set(names)
    assert len(expected) == 16

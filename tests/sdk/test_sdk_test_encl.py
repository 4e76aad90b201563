"""sdk.test_encl: the selftest enclave's layout, op structures and ops the selftests leave implicit."""

from __future__ import annotations

import ctypes
import inspect
from collections.abc import Iterator
from types import CodeType

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from sgxsim.errors import InvalidArgument
from sgxsim.hw.arch import PAGE_SIZE, Tcs
from sgxsim.hw.epc import EpcSectionConfig
from sgxsim.hw.machine import DEFAULT_EPC_BASE, Machine, MachineConfig
from sgxsim.kernel import uapi
from sgxsim.kernel.main import Kernel
from sgxsim.kernel.process import Process
from sgxsim.rand import Rng
from sgxsim.sdk.enclaves import test_encl as test_encl_module
from sgxsim.sdk.image import tcs_page
from sgxsim.sdk.loader import Enclave, load_enclave
from sgxsim.sdk.sign import generate_signing_key
from sgxsim.sdk.test_encl import (
    ENCL_BUFFER_SIZE,
    TEST_ENCL_SOURCE,
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
    encl_program,
)


def test_op_structures_match_defines_h() -> None:
    expected = {
        encl_op_header: (8, {"type": 0}),
        encl_op_put_to_buf: (16, {"header": 0, "value": 8}),
        encl_op_get_from_buf: (16, {"header": 0, "value": 8}),
        encl_op_put_to_addr: (24, {"header": 0, "value": 8, "addr": 16}),
        encl_op_get_from_addr: (24, {"header": 0, "value": 8, "addr": 16}),
        encl_op_eaccept: (32, {"header": 0, "epc_addr": 8, "flags": 16, "ret": 24}),
        encl_op_emodpe: (24, {"header": 0, "epc_addr": 8, "flags": 16}),
        encl_op_init_tcs_page: (32, {"header": 0, "tcs_page": 8, "ssa": 16, "entry": 24}),
    }
    for cls, (size, offsets) in expected.items():
        assert ctypes.sizeof(cls) == size, cls.__name__
        for name, off in offsets.items():
            assert getattr(cls, name).offset == off, (cls.__name__, name)
    assert [op.value for op in EnclOp] == list(range(9))


def test_layout_is_the_elf_plus_heap() -> None:
    image = build_test_encl()
    assert [s.name for s in image.segments] == ["tcs", "text", "data", "heap"]
    tcs, text, data, heap = image.segments
    assert (tcs.offset, tcs.size, tcs.flags, tcs.prot, tcs.measure) == (0, 2 * PAGE_SIZE, 0x100, 0x3, True)
    assert (text.offset, text.flags, text.prot, text.measure) == (2 * PAGE_SIZE, 0x205, 0x5, True)
    assert (data.flags, data.measure, data.size) == (0x203, True, ENCL_BUFFER_SIZE + 4 * PAGE_SIZE)
    assert (heap.size, heap.flags, heap.measure) == (PAGE_SIZE, 0x203, False)
    assert data.page(0)[0] == 1  # encl_buffer[8192] = { 1 }
    assert image.symbol("encl_buffer") == data.offset == encl_get_data_offset(image)
    assert encl_get_tcs_offset(image) == 0
    assert encl_get_entry(image, "encl_entry") == text.offset
    assert encl_get_entry(image, "encl_dyn_entry") > text.offset
    assert encl_get_entry(image, "no_such_symbol") == 0
    for i, ssa in enumerate(("encl_ssa_tcs1", "encl_ssa_tcs2")):
        t = Tcs.unpack(tcs.page(i))
        assert (t.ossa, t.nssa, t.oentry, t.fslimit, t.gslimit) == (
            image.symbol(ssa),
            1,
            image.symbol("encl_entry"),
            0xFFFFFFFF,
            0xFFFFFFFF,
        )
    assert image.symbol("encl_stack") == image.symbol("encl_ssa_tcs2") + 2 * PAGE_SIZE
    assert image.symbol("encl_stack") + PAGE_SIZE == data.end
    # Room for the SGX2 tests' extra pages (main.c EXPECT_LT(total_size + 3 * PAGE_SIZE, encl_size)).
    assert image.total_size + 3 * PAGE_SIZE < image.size
    assert build_test_encl(128 * PAGE_SIZE).size == 0x100000


def test_programs_differ_only_in_their_constants() -> None:
    entry = encl_program(0x2000, dyn=False, buffer_offset=0x4000, stack_offset=0x9000)
    dyn = encl_program(0x3000, dyn=True, buffer_offset=0x4000, stack_offset=0x9000)
    assert entry.endswith(TEST_ENCL_SOURCE) and dyn.endswith(TEST_ENCL_SOURCE)
    assert len(entry) == len(dyn)
    assert "ENCL_DYN = True" in dyn and "ENCL_DYN = False" in entry
    with pytest.raises(InvalidArgument):
        encl_program(0, dyn=1, buffer_offset=0, stack_offset=0)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return generate_signing_key(31)


@pytest.fixture
def encl(key: rsa.RSAPrivateKey) -> Iterator[Enclave]:
    config = MachineConfig(epc_sections=(EpcSectionConfig(DEFAULT_EPC_BASE, 128 * PAGE_SIZE, 0),))
    kernel = Kernel(Machine(config, Rng(9)))
    handle = load_enclave(Process(kernel, "t"), build_test_encl(), key=key)
    yield handle
    handle.close()


def test_enclave_code_runs_under_its_module_file(encl: Enclave) -> None:
    """The loader registers the enclave modules' files: the program's sdk/enclaves/test_encl.py part
    runs compiled under that file's path with the file's line numbers (tracebacks and coverage name
    it); the linker's constants before it have no file."""
    nop = encl_op_header()
    nop.type = EnclOp.ENCL_OP_NOP
    assert encl.call_op(nop) == 0
    programs = [code for code in encl.proc.k.machine.enclave_code_cache.values() if code is not None]
    assert programs
    for parts in programs:
        assert [part.co_filename for part in parts] == ["<enclave>", test_encl_module.__file__]
        functions = {c.co_name: c for c in parts[1].co_consts if isinstance(c, CodeType)}
        line = inspect.getsourcelines(test_encl_module.do_encl_op_nop)[1]
        assert functions["do_encl_op_nop"].co_firstlineno == line


def test_unknown_op_is_ignored(encl: Enclave) -> None:
    put = encl_op_put_to_buf()
    put.header.type = EnclOp.ENCL_OP_PUT_TO_BUFFER
    put.value = 42
    assert encl.call_op(put) == 0
    for kind in (EnclOp.ENCL_OP_MAX, 1 << 63):
        op = encl_op_put_to_buf()
        op.header.type = kind
        op.value = 7
        assert encl.call_op(op) == 0
        assert encl.run.function == uapi.EEXIT
        assert op.value == 7
    get = encl_op_get_from_buf()
    get.header.type = EnclOp.ENCL_OP_GET_FROM_BUFFER
    assert encl.call_op(get, tcs_index=1) == 0
    assert get.value == 42  # the buffer is shared by both TCSs and untouched by the unknown ops


def test_init_tcs_page_writes_a_tcs(encl: Enclave) -> None:
    """INIT_TCS_PAGE into the heap page, read back 8 bytes at a time with GET_FROM_ADDRESS."""
    target = encl.addr(encl.image.segment("heap").offset)
    init = encl_op_init_tcs_page()
    init.header.type = EnclOp.ENCL_OP_INIT_TCS_PAGE
    init.tcs_page = target
    init.ssa = 0x6000
    init.entry = 0x3000
    assert encl.call_op(init) == 0
    assert encl.run.function == uapi.EEXIT
    got = b""
    for off in range(0, 80, 8):
        op = encl_op_get_from_addr()
        op.header.type = EnclOp.ENCL_OP_GET_FROM_ADDRESS
        op.addr = target + off
        assert encl.call_op(op) == 0
        got += int(op.value).to_bytes(8, "little")
    assert got == tcs_page(0x6000, 0x3000)[:80]


def test_enclave_reads_untrusted_memory(encl: Enclave) -> None:
    """The op struct lives outside ELRANGE: PUT_TO_ADDRESS can also target untrusted memory."""
    outside = encl.proc.alloc(PAGE_SIZE)
    op = encl_op_put_to_addr()
    op.header.type = EnclOp.ENCL_OP_PUT_TO_ADDRESS
    op.value = 0x0123456789ABCDEF
    op.addr = outside + 8
    assert encl.call_op(op) == 0
    assert encl.proc.read(outside + 8, 8) == (0x0123456789ABCDEF).to_bytes(8, "little")

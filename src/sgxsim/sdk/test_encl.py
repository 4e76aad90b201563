"""The kernel SGX selftest enclave (``test_encl.elf``) as an sgxsim image.

The enclave program is :data:`TEST_ENCL_SOURCE`, Python source run by the enclave execution
engine (:mod:`sgxsim.hw.enclu`). It does what ``test_encl.c`` + ``test_encl_bootstrap.S`` do:

* the entry stub switches to the thread's stack (``encl_entry``: ``encl_stack`` + the TCS's
  offset, so TCS #1 at 0 and TCS #2 at 0x1000 get separate stacks; ``encl_dyn_entry``: the page
  just below a TCS created at run time), pushes the return address (RCX at EENTER) there, runs
  ``encl_body`` and EEXITs to the popped return address;
* ``encl_body`` reads the op header at RDI (untrusted memory outside ELRANGE) and dispatches
  ``PUT_TO_BUFFER``/``GET_FROM_BUFFER`` (``encl_buffer[0..8]``), ``PUT_TO_ADDRESS``/
  ``GET_FROM_ADDRESS`` (8 bytes at ``op->addr``), ``NOP``, ``EACCEPT``/``EMODPE`` (with a
  64-byte-aligned SECINFO built on the enclave stack, as the C code's local variable is) and
  ``INIT_TCS_PAGE``; an unknown op type does nothing.

Enclave addresses are formed from link-time offsets the way the C code's RIP-relative
``__encl_base`` does: the program knows its own enclave offset (``ENCL_SELF``) and the
processor's ``rip`` is its address.

Layout (the ELF's PT_LOAD segments plus the heap, in ``encl_load`` order): ``tcs`` (two TCS
pages at 0 and 0x1000; OSSA = ``encl_ssa_tcs1``/``2``, NSSA = 1, OENTRY = ``encl_entry``,
FS/GS limits 0xFFFFFFFF; mapped RW), ``text`` (R|X: the ``encl_entry`` and ``encl_dyn_entry``
program images), ``data`` (RW: ``encl_buffer[8192]`` -- first byte 1, as ``= { 1 }`` -- then
``encl_ssa_tcs1``, ``encl_ssa_tcs2``, the stack of TCS #1 and, from ``encl_stack``, the stack of
TCS #2), ``heap`` (``heap_size`` zero bytes, RW, not measured).

Models: tools/testing/selftests/sgx/{test_encl.c, test_encl_bootstrap.S, test_encl.lds,
defines.h, load.c}.
Differs: RSP/RBP are not modelled by the engine, so the entry stub keeps only the return
address on the enclave stack (the real stub also saves the caller's RSP there).
"""

from __future__ import annotations

import ctypes
import enum

from sgxsim.errors import InvalidArgument, ModelInvariantError
from sgxsim.hw.arch import PAGE_SIZE, SecinfoFlags
from sgxsim.hw.enclu import program_image
from sgxsim.sdk.enclaves import enclave_source
from sgxsim.sdk.image import EnclaveImage, ImageBuilder, tcs_page
from sgxsim.sdk.runtime import link_program

__all__ = [
    "ENCL_BUFFER_SIZE",
    "ENCL_HEAP_SIZE_DEFAULT",
    "TEST_ENCL_SOURCE",
    "EnclOp",
    "build_test_encl",
    "encl_get_data_offset",
    "encl_get_entry",
    "encl_get_tcs_offset",
    "encl_op_eaccept",
    "encl_op_emodpe",
    "encl_op_get_from_addr",
    "encl_op_get_from_buf",
    "encl_op_header",
    "encl_op_init_tcs_page",
    "encl_op_put_to_addr",
    "encl_op_put_to_buf",
    "encl_program",
]

#: main.h ``ENCL_HEAP_SIZE_DEFAULT``.
ENCL_HEAP_SIZE_DEFAULT = PAGE_SIZE
#: ``encl_buffer[8192]``: two pages; the second is the target of the permission tests.
ENCL_BUFFER_SIZE = 8192


class EnclOp(enum.IntEnum):
    """defines.h ``enum encl_op_type``."""

    ENCL_OP_PUT_TO_BUFFER = 0
    ENCL_OP_GET_FROM_BUFFER = 1
    ENCL_OP_PUT_TO_ADDRESS = 2
    ENCL_OP_GET_FROM_ADDRESS = 3
    ENCL_OP_NOP = 4
    ENCL_OP_EACCEPT = 5
    ENCL_OP_EMODPE = 6
    ENCL_OP_INIT_TCS_PAGE = 7
    ENCL_OP_MAX = 8


# --------------------------------------------------------------------------------------------
# Op structures (defines.h), byte-exact: ``bytes(op)`` is what the C test puts in memory.

_u64 = ctypes.c_uint64


class _OpStruct(ctypes.Structure):
    _pack_ = 1


class encl_op_header(_OpStruct):  # noqa: N801 - defines.h name
    """``struct encl_op_header {u64 type}``."""

    _fields_ = [("type", _u64)]


class encl_op_put_to_buf(_OpStruct):  # noqa: N801
    """``{header; value}``: copy ``value`` into ``encl_buffer[0..8]``."""

    _fields_ = [("header", encl_op_header), ("value", _u64)]


class encl_op_get_from_buf(_OpStruct):  # noqa: N801
    """``{header; value}``: copy ``encl_buffer[0..8]`` into ``value``."""

    _fields_ = [("header", encl_op_header), ("value", _u64)]


class encl_op_put_to_addr(_OpStruct):  # noqa: N801
    """``{header; value; addr}``: write ``value`` at enclave address ``addr``."""

    _fields_ = [("header", encl_op_header), ("value", _u64), ("addr", _u64)]


class encl_op_get_from_addr(_OpStruct):  # noqa: N801
    """``{header; value; addr}``: read 8 bytes at ``addr`` into ``value``."""

    _fields_ = [("header", encl_op_header), ("value", _u64), ("addr", _u64)]


class encl_op_eaccept(_OpStruct):  # noqa: N801
    """``{header; epc_addr; flags; ret}``: EACCEPT ``epc_addr`` with SECINFO ``flags``; RAX -> ``ret``."""

    _fields_ = [("header", encl_op_header), ("epc_addr", _u64), ("flags", _u64), ("ret", _u64)]


class encl_op_emodpe(_OpStruct):  # noqa: N801
    """``{header; epc_addr; flags}``: EMODPE ``epc_addr`` with SECINFO ``flags``."""

    _fields_ = [("header", encl_op_header), ("epc_addr", _u64), ("flags", _u64)]


class encl_op_init_tcs_page(_OpStruct):  # noqa: N801
    """``{header; tcs_page; ssa; entry}``: write a TCS at ``tcs_page`` (OSSA ``ssa``, OENTRY ``entry``)."""

    _fields_ = [("header", encl_op_header), ("tcs_page", _u64), ("ssa", _u64), ("entry", _u64)]


# --------------------------------------------------------------------------------------------
# The enclave program.

#: Body of both entry programs (the bytes of :mod:`sgxsim.sdk.enclaves.test_encl`);
#: :func:`encl_program` prepends the link-time constants ``ENCL_SELF`` (this image's enclave
#: offset), ``ENCL_DYN`` (entered through ``encl_dyn_entry``), ``ENCL_BUFFER`` and ``ENCL_STACK``
#: (offsets of ``encl_buffer`` and ``encl_stack``).
TEST_ENCL_SOURCE = enclave_source("test_encl")


def encl_program(self_offset: int, *, dyn: bool, buffer_offset: int, stack_offset: int) -> str:
    """The source of one entry program: link-time constants, then :data:`TEST_ENCL_SOURCE`.

    The constants are fixed-width (:func:`~sgxsim.sdk.runtime.link_program`), so the program's
    length does not depend on the layout.
    """
    if not isinstance(dyn, bool):
        raise InvalidArgument(f"encl_program: dyn must be a bool, got {dyn!r}")
    constants = {
        "ENCL_SELF": self_offset,
        "ENCL_DYN": dyn,
        "ENCL_BUFFER": buffer_offset,
        "ENCL_STACK": stack_offset,
    }
    return link_program(TEST_ENCL_SOURCE, constants, runtime=False)


def _program_pages(*, dyn: bool) -> int:
    image = program_image(encl_program(0, dyn=dyn, buffer_offset=0, stack_offset=0))
    return -(-len(image) // PAGE_SIZE)


def build_test_encl(heap_size: int = ENCL_HEAP_SIZE_DEFAULT) -> EnclaveImage:
    """The selftest enclave with a ``heap_size``-byte heap (load.c ``encl_load``).

    Symbols: ``encl_entry``, ``encl_dyn_entry``, ``encl_buffer``, ``encl_ssa_tcs1``,
    ``encl_ssa_tcs2``, ``encl_stack``, ``__encl_base`` (0).
    """
    b = ImageBuilder()
    b.symbol("__encl_base", 0)
    b.add_tcs("tcs", 2)
    # Programs are laid out once with dummy constants to learn their sizes; the real
    # constants have the same width, so the second layout is identical.
    text = b.next_offset
    dyn_offset = text + _program_pages(dyn=False) * PAGE_SIZE
    data = dyn_offset + _program_pages(dyn=True) * PAGE_SIZE
    buffer_off = data
    ssa1 = buffer_off + ENCL_BUFFER_SIZE
    ssa2 = ssa1 + PAGE_SIZE
    stack = ssa2 + 2 * PAGE_SIZE  # stack page of TCS #1 precedes encl_stack
    programs = [
        ("encl_entry", encl_program(text, dyn=False, buffer_offset=buffer_off, stack_offset=stack)),
        (
            "encl_dyn_entry",
            encl_program(dyn_offset, dyn=True, buffer_offset=buffer_off, stack_offset=stack),
        ),
    ]
    entries = b.add_code("text", programs)
    if entries != {"encl_entry": text, "encl_dyn_entry": dyn_offset} or b.next_offset != data:
        raise ModelInvariantError("test enclave layout changed between passes")  # pragma: no cover
    b.fill("tcs", tcs_page(ssa1, text) + tcs_page(ssa2, text))
    data_size = ENCL_BUFFER_SIZE + 4 * PAGE_SIZE
    if b.add("data", data_size, data=b"\x01") != data:
        raise ModelInvariantError("data segment misplaced")  # pragma: no cover
    for name, off in (
        ("encl_buffer", buffer_off),
        ("encl_ssa_tcs1", ssa1),
        ("encl_ssa_tcs2", ssa2),
        ("encl_stack", stack),
    ):
        b.symbol(name, off)
    b.add_heap(heap_size)
    return b.build()


def encl_get_tcs_offset(image: EnclaveImage) -> int:
    """main.c ``encl_get_tcs_offset``: offset of segment 0 if it is the RW (TCS) segment, else -1."""
    seg = image.segments[0]
    return seg.offset if seg.prot == int(SecinfoFlags.R | SecinfoFlags.W) else -1


def encl_get_data_offset(image: EnclaveImage) -> int:
    """main.c ``encl_get_data_offset``: the first RW segment after segment 0, else -1."""
    for seg in image.segments[1:]:
        if seg.prot == int(SecinfoFlags.R | SecinfoFlags.W):
            return seg.offset
    return -1


def encl_get_entry(image: EnclaveImage, symbol: str) -> int:
    """load.c ``encl_get_entry``: a symbol's enclave offset, 0 if the image has no such symbol."""
    return image.symbols.get(symbol, 0)

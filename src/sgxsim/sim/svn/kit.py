"""The enclave every exploration process builds: layout, program, signed kit, handle."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import rsa

from sgxsim.errors import InvalidArgument
from sgxsim.hw import crypto
from sgxsim.hw.arch import PAGE_SIZE, Attributes, PageType, Sigstruct, Tcs
from sgxsim.hw.arch import secinfo_flags as _secinfo_flags
from sgxsim.hw.enclu import program_image
from sgxsim.kernel.process import Process
from sgxsim.rand import Rng
from sgxsim.sdk.enclaves import enclave_source
from sgxsim.sdk.enclaves.svn_kit import DATA_OFFSET

# Layout (offsets inside ELRANGE).
OFF_TCS = 0x0000
OFF_SSA = 0x1000
OFF_DATA = DATA_OFFSET
OFF_CODE = 0x3000


class Op(ctypes.Structure):
    _pack_ = 1
    _fields_ = [
        ("type", ctypes.c_uint64),
        ("value", ctypes.c_uint64),
        ("flag", ctypes.c_uint64),
        ("pad", ctypes.c_uint64),
        ("n", ctypes.c_uint64),
        ("ret", ctypes.c_uint64),
    ]


@dataclass(frozen=True)
class EnclaveKit:
    """The enclave image every scenario loads, signed once (per exploration, not per schedule).

    Pages are added unmeasured (only the EADD records enter MRENCLAVE) to keep schedules short.
    """

    pages: tuple[tuple[int, bytes, int], ...]  # (offset, data, SECINFO flags)
    size: int
    sigstruct: bytes

    @classmethod
    def build(cls, heap_pages: int = 4, key: rsa.RSAPrivateKey | None = None) -> EnclaveKit:
        """Lay out and sign the enclave (heap pages after the code, RW)."""
        if not isinstance(heap_pages, int) or isinstance(heap_pages, bool) or heap_pages < 0:
            raise InvalidArgument(f"heap_pages must be an int >= 0, got {heap_pages!r}")
        code = program_image(enclave_source("svn_kit"))
        code += bytes(-len(code) % PAGE_SIZE)
        tcs = Tcs(ossa=OFF_SSA, nssa=1, oentry=OFF_CODE, fslimit=0xFFFFFFFF, gslimit=0xFFFFFFFF).pack()
        rw = _secinfo_flags(PageType.PT_REG, 3)
        pages: list[tuple[int, bytes, int]] = [
            (OFF_TCS, tcs, _secinfo_flags(PageType.PT_TCS)),
            (OFF_SSA, bytes(PAGE_SIZE), rw),
            (OFF_DATA, bytes(PAGE_SIZE), rw),
        ]
        for i in range(0, len(code), PAGE_SIZE):
            pages.append((OFF_CODE + i, code[i : i + PAGE_SIZE], _secinfo_flags(PageType.PT_REG, 5)))
        top = pages[-1][0] + PAGE_SIZE
        for i in range(heap_pages):
            pages.append((top + i * PAGE_SIZE, bytes(PAGE_SIZE), rw))
        total = pages[-1][0] + PAGE_SIZE
        size = PAGE_SIZE
        while size < total:
            size <<= 1
        meas = crypto.Measurement()
        meas._ecreate(1, size)
        for off, data, fl in pages:
            hashed = fl & ~0x7 if (fl >> 8) & 0xFF == PageType.PT_TCS else fl
            meas.page(off, hashed, data, False)
        sig = Sigstruct(
            attributes=int(Attributes.MODE64BIT),
            attributes_mask=0xFFFF_FFFF_FFFF_FFFF,
            xfrm=3,
            xfrm_mask=0,
            mrenclave=meas.finalize(),
            vendor=0,
        )
        if key is None:
            key = crypto.rsa3072_e3_keygen(Rng(7).stream("keys"))
        return cls(tuple(pages), size, crypto.sigstruct_sign(sig, key).pack())

    @property
    def heap(self) -> tuple[int, int]:
        """(offset, pages) of the heap."""
        code_end = next(
            off for off, _, fl in self.pages if off > OFF_CODE and fl == _secinfo_flags(PageType.PT_REG, 3)
        )
        return code_end, (self.pages[-1][0] + PAGE_SIZE - code_end) // PAGE_SIZE


@dataclass
class EnclHandle:
    """An enclave a process built: its fd, base and the untrusted op block."""

    proc: Process
    fd: int
    base: int
    op_addr: int
    encl_id: int

"""Test helpers for hw.enclu: a dict page table, host memory, and a selftest-like enclave.

The enclave is built with raw ENCLS leaves through ``tests/hw/helpers.py`` (the ENCLS tests' builder).

The enclave mirrors the kernel selftest's ``test_encl`` (two TCS pages at offsets 0 and 0x1000, a code
segment, an SSA region and a stack-less data segment whose second page is the permission-test page),
except that its code is an sgxsim program image (hw.enclu.program_image). Operations are requested the
selftest way: RDI points to an op struct in host (untrusted) memory whose first u64 is the op type.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass, field

from tests.hw.helpers import (
    RW,
    einit,
    expected_mrenclave,
    other_signing_key,
    reg_page,
    sign,
    signing_key,
    tcs_page,
)
from tests.hw.helpers import build_enclave as raw_build

from sgxsim.hw import crypto
from sgxsim.hw.arch import (
    PAGE_SIZE,
    Attributes,
    EnclsLeaf,
    EncluLeaf,
    Fault,
    SgxStatus,
    Sigstruct,
    Tcs,
)
from sgxsim.hw.cpu import Pte
from sgxsim.hw.enclu import EnclaveExit, program_image
from sgxsim.hw.machine import Machine

#: Op types: the selftest's ``enum encl_op_type`` values, then sgxsim-only ones from 100.
PUT_TO_BUFFER = 0
GET_FROM_BUFFER = 1
PUT_TO_ADDRESS = 2
GET_FROM_ADDRESS = 3
NOP = 4
EACCEPT = 5
EMODPE = 6
EREPORT = 100
EGETKEY = 101
EACCEPTCOPY = 102
READ_SSA = 103
TRAP = 104
SPIN = 105
RAW_EREPORT = 106
RAW_EGETKEY = 107
RAW_EACCEPT = 108
REGS = 109
RAW_EMODPE = 110
RAW_EACCEPTCOPY = 111
EEXIT_TO = 112
COPY_IN = 113
COPY_OUT = 114

MAGIC = 0x1122334455667788
MAGIC2 = 0x8877665544332211

#: Where the vDSO's ENCLU would be (AEP) and where untrusted host memory is mapped.
AEP = 0x7FFF_F7FF_0000
HOST_BASE = 0x5555_0000_0000
DEFAULT_BASE = 0x7F00_0000_0000

#: The enclave's program: the selftest's ``encl_body`` dispatch, plus leaf ops used by the tests.
#: ``L`` (the layout dict) is prepended by :func:`build_enclave`.
PROGRAM = """
def _scratch(ctx):
    # One scratch page per TCS (like the selftest's per-TCS stack).
    return ctx.base + (L["scratch1"] if ctx.tcs == ctx.base + L["tcs1"] else L["scratch2"])

def enclave_entry(ctx):
    op = ctx.rdi
    kind = ctx.read_u64(op)
    buf = ctx.base + L["data"]
    s = _scratch(ctx)
    if kind == 0:
        ctx.write_u64(buf, ctx.read_u64(op + 8))
    elif kind == 1:
        ctx.write_u64(op + 8, ctx.read_u64(buf))
    elif kind == 2:
        ctx.write_u64(ctx.read_u64(op + 16), ctx.read_u64(op + 8))
    elif kind == 3:
        ctx.write_u64(op + 8, ctx.read_u64(ctx.read_u64(op + 16)))
    elif kind == 4:
        pass
    elif kind == 5:
        ctx.write(s, ctx.read_u64(op + 16).to_bytes(8, "little") + bytes(56))
        ctx.write_u64(op + 24, ctx.eaccept(s, ctx.read_u64(op + 8)))
    elif kind == 6:
        ctx.write(s, ctx.read_u64(op + 16).to_bytes(8, "little") + bytes(56))
        ctx.emodpe(s, ctx.read_u64(op + 8))
    elif kind == 100:
        # op: +8 TARGETINFO (512), +520 REPORTDATA (64), out +584 REPORT (432)
        ctx.write(s, ctx.read(op + 8, 512))
        ctx.write(s + 512, ctx.read(op + 520, 64))
        ctx.ereport(s, s + 512, s + 1024)
        ctx.write(op + 584, ctx.read(s + 1024, 432))
    elif kind == 101:
        # op: +8 KEYREQUEST (512); out +520 status u64, +528 key (16)
        ctx.write(s, ctx.read(op + 8, 512))
        status = ctx.egetkey(s, s + 512)
        ctx.write_u64(op + 520, status)
        ctx.write(op + 528, ctx.read(s + 512, 16))
    elif kind == 102:
        # op: +8 dst, +16 src, +24 flags; out +32 status
        ctx.write(s, ctx.read_u64(op + 24).to_bytes(8, "little") + bytes(56))
        ctx.write_u64(op + 32, ctx.eacceptcopy(s, ctx.read_u64(op + 8), ctx.read_u64(op + 16)))
    elif kind == 103:
        # op: +8 frame; out +16 the SSA GPR area (184 bytes)
        ctx.write(op + 16, ctx.ssa_gpr(ctx.read_u64(op + 8)).pack())
    elif kind == 104:
        # op: +8 vector; the trap returns after ERESUME; then count the resumption at +16
        ctx.rsi = 0xABCD
        ctx.trap(ctx.read_u64(op + 8))
        ctx.write_u64(op + 16, ctx.rsi)
    elif kind == 105:
        # op: +8 iterations; touch the buffer that many times, count in +16
        for i in range(ctx.read_u64(op + 8)):
            ctx.write_u64(op + 16, i + 1)
    elif kind == 106:
        ctx.ereport(ctx.read_u64(op + 8), ctx.read_u64(op + 16), ctx.read_u64(op + 24))
    elif kind == 107:
        ctx.write_u64(op + 24, ctx.egetkey(ctx.read_u64(op + 8), ctx.read_u64(op + 16)))
    elif kind == 108:
        ctx.write_u64(op + 24, ctx.eaccept(ctx.read_u64(op + 8), ctx.read_u64(op + 16)))
    elif kind == 109:
        # entry registers: RAX (CSSA), RBX (TCS), RCX (return address), RDX, RSI, R8, R9
        for i, v in enumerate((ctx.rax, ctx.rbx, ctx.rcx, ctx.rdx, ctx.rsi, ctx.r8, ctx.r9)):
            ctx.write_u64(op + 8 + 8 * i, v)
    elif kind == 110:
        ctx.emodpe(ctx.read_u64(op + 8), ctx.read_u64(op + 16))
    elif kind == 111:
        ctx.write_u64(op + 32, ctx.eacceptcopy(ctx.read_u64(op + 8), ctx.read_u64(op + 16),
                                               ctx.read_u64(op + 24)))
    elif kind == 112:
        ctx.eexit(ctx.read_u64(op + 8), rdx=7, r8=8, r9=9)
    elif kind == 113:
        ctx.write(ctx.read_u64(op + 8), ctx.read(op + 24, ctx.read_u64(op + 16)))
    elif kind == 114:
        ctx.write(op + 24, ctx.read(ctx.read_u64(op + 8), ctx.read_u64(op + 16)))
    ctx.eexit(ctx.rcx, rdi=0, rsi=0)
"""


class DictPageTable:
    """A process page table as a dict of 4 KiB PTEs by page-aligned linear address."""

    def __init__(self) -> None:
        self.ptes: dict[int, Pte] = {}

    def lookup(self, linaddr: int) -> Pte | None:
        return self.ptes.get(linaddr & ~(PAGE_SIZE - 1))

    def map(
        self, linaddr: int, phys: int, *, writable: bool = True, nx: bool = True, user: bool = True
    ) -> Pte:
        pte = Pte(phys & ~(PAGE_SIZE - 1), present=True, writable=writable, user=user, nx=nx)
        self.ptes[linaddr & ~(PAGE_SIZE - 1)] = pte
        return pte

    def unmap(self, linaddr: int) -> None:
        self.ptes.pop(linaddr & ~(PAGE_SIZE - 1), None)

    def protect(self, linaddr: int, *, writable: bool | None = None, nx: bool | None = None) -> None:
        pte = self.ptes[linaddr & ~(PAGE_SIZE - 1)]
        if writable is not None:
            pte.writable = writable
        if nx is not None:
            pte.nx = nx


@dataclass
class Enclave:
    """A built enclave and the process context it runs in."""

    m: Machine
    pt: DictPageTable
    base: int
    size: int
    secs_phys: int
    layout: dict[str, int]
    phys: dict[int, int]  # linear address -> EPC physical address
    mrenclave: bytes
    mrsigner: bytes
    sigstruct: Sigstruct
    init_status: object
    host_next: int = HOST_BASE
    extra: dict[str, object] = field(default_factory=dict)

    def la(self, name: str) -> int:
        return self.base + self.layout[name]

    @property
    def tcs1(self) -> int:
        return self.la("tcs1")

    @property
    def tcs2(self) -> int:
        return self.la("tcs2")

    @property
    def secs_index(self) -> int:
        idx = self.m.epc.index_of(self.secs_phys)
        assert idx is not None
        return idx

    def epc_index(self, la: int) -> int:
        idx = self.m.epc.index_of(self.phys[la & ~(PAGE_SIZE - 1)])
        assert idx is not None
        return idx

    # -- host (untrusted) memory -----------------------------------------------------------------

    def host_page(self) -> int:
        """Map a fresh DRAM page into the process (RW, NX) and return its linear address."""
        la = self.host_next
        self.host_next += PAGE_SIZE
        self.pt.map(la, self.m.dram.alloc_page(), writable=True, nx=True)
        return la

    def host_write(self, la: int, data: bytes) -> None:
        pte = self.pt.lookup(la)
        assert pte is not None
        self.m.dram.write(pte.phys + (la & (PAGE_SIZE - 1)), data)

    def host_read(self, la: int, n: int) -> bytes:
        pte = self.pt.lookup(la)
        assert pte is not None
        return self.m.dram.read(pte.phys + (la & (PAGE_SIZE - 1)), n)

    def host_u64(self, la: int) -> int:
        return int.from_bytes(self.host_read(la, 8), "little")

    def op(self, *words: int) -> int:
        """An op struct of u64 ``words`` in a fresh host page; returns its address."""
        la = self.host_page()
        self.host_write(la, b"".join(w.to_bytes(8, "little") for w in words))
        return la

    def copy_in(self, dst: int, data: bytes, tcs: int | None = None) -> EnclaveExit | Fault:
        """Have the enclave copy ``data`` from host memory to enclave address ``dst``."""
        la = self.host_page()
        self.host_write(la, struct.pack("<QQQ", COPY_IN, dst, len(data)) + data)
        return self.enter(la, tcs)

    def copy_out(self, src: int, n: int, tcs: int | None = None) -> bytes:
        """Have the enclave copy ``n`` bytes at enclave address ``src`` out; asserts it EEXITed."""
        la = self.op(COPY_OUT, src, n)
        res = self.enter(la, tcs)
        assert isinstance(res, EnclaveExit) and not res.is_aex, res
        return self.host_read(la + 24, n)

    # -- entering ---------------------------------------------------------------------------------

    def enter(self, op_la: int, tcs: int | None = None, cpu: int = 0) -> EnclaveExit | Fault:
        """EENTER through ``tcs`` (default TCS #1) with RDI = op, as the vDSO does."""
        self.m.cpus[cpu].page_table = self.pt
        return self.m.enclu(cpu, EncluLeaf.EENTER, self.tcs1 if tcs is None else tcs, AEP, rdi=op_la)

    def resume(self, tcs: int | None = None, cpu: int = 0) -> EnclaveExit | Fault:
        self.m.cpus[cpu].page_table = self.pt
        return self.m.enclu(cpu, EncluLeaf.ERESUME, self.tcs1 if tcs is None else tcs, AEP)

    def tcs_struct(self, tcs: int | None = None) -> Tcs:
        return Tcs.unpack(self.m.epc.read(self.epc_index(self.tcs1 if tcs is None else tcs)))

    # -- kernel-side SGX2 operations (what the driver's ioctls do) -------------------------------

    def secinfo_addr(self, flags: int) -> int:
        addr = self.m.dram.alloc_page()
        self.m.dram.write(addr, flags.to_bytes(8, "little") + bytes(56))
        return addr

    def emodpr(self, la: int, perms: int) -> object:
        return self.m.encls(0, EnclsLeaf.EMODPR, self.secinfo_addr(perms), self.phys[la])

    def emodt(self, la: int, page_type: int) -> object:
        return self.m.encls(0, EnclsLeaf.EMODT, self.secinfo_addr(page_type << 8), self.phys[la])

    def etrack(self) -> object:
        return self.m.encls(0, EnclsLeaf.ETRACK, 0, self.secs_phys)

    def eaug(self, la: int, *, writable: bool = True, nx: bool = True) -> int:
        """EAUG a free EPC page at ``la`` and map it; returns the EPC physical address."""
        epc_phys = free_epc_page(self.m)
        pageinfo = self.m.dram.alloc_page()
        self.m.dram.write(pageinfo, struct.pack("<QQQQ", la, 0, 0, self.secs_phys))
        res = self.m.encls(0, EnclsLeaf.EAUG, pageinfo, epc_phys)
        assert res == SgxStatus.SUCCESS, res
        self.phys[la] = epc_phys
        self.pt.map(la, epc_phys, writable=writable, nx=nx)
        return epc_phys


def free_epc_page(m: Machine) -> int:
    """Physical address of the first invalid EPC page."""
    for idx in range(m.epc.npages):
        if not m.epc.epcm.valid[idx]:
            return m.epc.phys_of(idx)
    raise AssertionError("EPC full")


def build_enclave(
    m: Machine,
    *,
    program: str = PROGRAM,
    base: int = DEFAULT_BASE,
    nssa: int = 2,
    ssa_frame_size: int = 1,
    attributes: int = int(Attributes.MODE64BIT),
    miscselect: int = 0,
    xfrm: int = 0x3,
    code_perms: int = 0x5,
    isvprodid: int = 0,
    isvsvn: int = 0,
    other_key: bool = False,
    corrupt_code_byte: int | None = None,
    tcs_flags: int = 0,
) -> Enclave:
    """Build and EINIT the test enclave with raw ENCLS (tests/hw/helpers.py) and map it into a page table.

    ``corrupt_code_byte`` flips one byte of the code as loaded while the SIGSTRUCT carries the
    MRENCLAVE of the intended code (EINIT must then fail). EINIT's outcome is ``init_status``.
    """
    sfs = ssa_frame_size
    n_code = (len(program_image("L = {}\n" + program)) + 2 * PAGE_SIZE) // PAGE_SIZE
    layout: dict[str, int] = {"tcs1": 0, "tcs2": PAGE_SIZE, "code": 2 * PAGE_SIZE}
    off = layout["code"] + n_code * PAGE_SIZE
    layout["ssa1"] = off
    off += nssa * sfs * PAGE_SIZE
    layout["ssa2"] = off
    off += nssa * sfs * PAGE_SIZE
    for name in ("data", "data2", "scratch1", "scratch2"):
        layout[name] = off
        off += PAGE_SIZE
    layout["end"] = layout["hole"] = off  # the first unpopulated page of ELRANGE (EAUG tests)
    size = 2 * PAGE_SIZE
    while size < 2 * off:
        size *= 2
    image = program_image(f"L = {layout!r}\n" + program)
    assert len(image) <= n_code * PAGE_SIZE
    code = image + bytes(n_code * PAGE_SIZE - len(image))
    specs = [
        tcs_page(layout["tcs1"], ossa=layout["ssa1"], nssa=nssa, oentry=layout["code"], flags=tcs_flags),
        tcs_page(layout["tcs2"], ossa=layout["ssa2"], nssa=nssa, oentry=layout["code"], flags=tcs_flags),
    ]
    specs += [
        reg_page(layout["code"] + i * PAGE_SIZE, code[i * PAGE_SIZE : (i + 1) * PAGE_SIZE], perms=code_perms)
        for i in range(n_code)
    ]
    specs += [reg_page(o, perms=RW) for o in range(layout["ssa1"], layout["data"], PAGE_SIZE)]
    specs += [reg_page(o, perms=RW, measure=False) for o in range(layout["data"], layout["end"], PAGE_SIZE)]
    loaded = list(specs)
    if corrupt_code_byte is not None:
        i = 2 + corrupt_code_byte // PAGE_SIZE
        data = bytearray(specs[i].page)
        data[corrupt_code_byte % PAGE_SIZE] ^= 0xFF
        loaded[i] = dataclasses.replace(specs[i], data=bytes(data))
    raw = raw_build(
        m,
        loaded,
        size=size,
        base=base,
        ssa_frame_size=sfs,
        attributes=attributes,
        xfrm=xfrm,
        miscselect=miscselect,
        init=False,
    )
    key = other_signing_key() if other_key else signing_key()
    sig = sign(
        raw, mrenclave=expected_mrenclave(size, sfs, specs), key=key, isvprodid=isvprodid, isvsvn=isvsvn
    )
    status = einit(m, raw, sig)
    pt = DictPageTable()
    phys = {base + o: p for o, p in raw.pages.items()}
    for spec in specs:
        executable = layout["code"] <= spec.offset < layout["ssa1"]
        pt.map(base + spec.offset, raw.pages[spec.offset], writable=not executable, nx=not executable)
    return Enclave(
        m,
        pt,
        base,
        size,
        raw.secs_phys,
        layout,
        phys,
        expected_mrenclave(size, sfs, specs),
        crypto.mrsigner(sig.modulus),
        sig,
        status,
    )

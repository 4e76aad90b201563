"""Shared helpers for the driver tests: a small machine, a test enclave built through the real
ioctl path, and the end-of-test accounting checks (free + used = total, EPCM agrees, no leak)."""

from __future__ import annotations

import ctypes
import functools
import random
import struct
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import rsa

from sgxsim.hw import crypto
from sgxsim.hw.arch import PAGE_SIZE, Attributes, PageType, Secs, Sigstruct, Tcs, secinfo_flags
from sgxsim.hw.cpu import Pte
from sgxsim.hw.enclu import program_image
from sgxsim.hw.epc import EpcSectionConfig
from sgxsim.hw.machine import DEFAULT_EPC_BASE, Machine, MachineConfig
from sgxsim.kernel import uapi as U  # noqa: N812
from sgxsim.kernel.main import Kernel, KernelConfig, validate_epc
from sgxsim.kernel.process import Process
from sgxsim.rand import Rng

RW = U.PROT_READ | U.PROT_WRITE
RX = U.PROT_READ | U.PROT_EXEC
RWX = U.PROT_READ | U.PROT_WRITE | U.PROT_EXEC

# Layout of the test enclave (offsets).
TCS1 = 0x0000
TCS2 = 0x1000
SSA1 = 0x2000
SSA2 = 0x3000
DATA1 = 0x4000
DATA2 = 0x5000
CODE = 0x6000

#: One shared all-zero page object (heap pages of huge enclaves must not cost host memory).
ZERO_PAGE = bytes(PAGE_SIZE)

# Operations of the enclave program (the op block is 6 u64: type, value, addr, flags, n, ret).
OP_PUT, OP_GET, OP_PUT_ADDR, OP_GET_ADDR, OP_NOP, OP_EACCEPT, OP_EMODPE, OP_FILL, OP_CHECK, OP_TRAP = range(
    10
)

PROGRAM = """
def enclave_entry(ctx):
    op = ctx.rdi
    t = ctx.read_u64(op)
    buf = ctx.base + 0x4000
    if t == 0:
        ctx.write_u64(buf, ctx.read_u64(op + 8))
    elif t == 1:
        ctx.write_u64(op + 8, ctx.read_u64(buf))
    elif t == 2:
        ctx.write_u64(ctx.read_u64(op + 16), ctx.read_u64(op + 8))
    elif t == 3:
        ctx.write_u64(op + 8, ctx.read_u64(ctx.read_u64(op + 16)))
    elif t == 5:
        si = buf + 0x40
        ctx.write(si, ctx.read_u64(op + 24).to_bytes(8, "little") + bytes(56))
        ctx.write_u64(op + 40, ctx.eaccept(si, ctx.read_u64(op + 16)))
    elif t == 6:
        si = buf + 0x80
        ctx.write(si, ctx.read_u64(op + 24).to_bytes(8, "little") + bytes(56))
        ctx.emodpe(si, ctx.read_u64(op + 16))
    elif t == 7:
        addr, seed = ctx.read_u64(op + 16), ctx.read_u64(op + 8)
        for i in range(ctx.read_u64(op + 32)):
            ctx.write_u64(addr + i * 4096, (seed + i) & 0xFFFFFFFFFFFFFFFF)
    elif t == 8:
        addr, seed = ctx.read_u64(op + 16), ctx.read_u64(op + 8)
        bad = 0
        for i in range(ctx.read_u64(op + 32)):
            if ctx.read_u64(addr + i * 4096) != (seed + i) & 0xFFFFFFFFFFFFFFFF:
                bad += 1
        ctx.write_u64(op + 40, bad)
    elif t == 9:
        ctx.trap(ctx.read_u64(op + 8))
    ctx.eexit(ctx.rcx)
"""


class Op(ctypes.Structure):
    _pack_ = 1
    _fields_ = [
        ("type", ctypes.c_uint64),
        ("value", ctypes.c_uint64),
        ("addr", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
        ("n", ctypes.c_uint64),
        ("ret", ctypes.c_uint64),
    ]


@functools.cache
def signing_key() -> rsa.RSAPrivateKey:
    return crypto.rsa3072_e3_keygen(Rng(7).stream("keys"))


def small_machine(
    pages: int = 256,
    *,
    sgx2: bool = True,
    sections: tuple[EpcSectionConfig, ...] | None = None,
    sockets: int = 1,
    cpus_per_socket: int = 4,
    seed: int = 1,
) -> Machine:
    secs = sections if sections is not None else (EpcSectionConfig(DEFAULT_EPC_BASE, pages * PAGE_SIZE, 0),)
    return Machine(
        MachineConfig(epc_sections=secs, sgx2=sgx2, sockets=sockets, cpus_per_socket=cpus_per_socket),
        Rng(seed),
    )


@dataclass
class World:
    """A machine, its kernel, and the processes a test created."""

    machine: Machine
    kernel: Kernel
    procs: list[Process] = field(default_factory=list)
    allowed_warns: int = 0
    dram_baseline: int = 0

    def proc(self, name: str = "test", cpu: int = 0) -> Process:
        p = Process(self.kernel, name, cpu=cpu)
        self.procs.append(p)
        return p

    def check(self, *, expect_empty: bool = False) -> None:
        rep = validate_epc(self.kernel, expect_empty=expect_empty)
        assert not rep.problems, rep.problems

    def teardown(self) -> None:
        for p in self.procs:
            if not p.exited:
                p.exit()
        self.check(expect_empty=True)
        k = self.kernel
        assert not k.enclaves and not k.vepcs
        assert k.dram_pages <= self.dram_baseline, (k.dram_pages, self.dram_baseline)
        assert k.log.warn_count == self.allowed_warns, k.log.format()
        assert k.sgx_usage_count == 0


def make_world(pages: int = 256, *, config: KernelConfig | None = None, **kw: object) -> World:
    m = small_machine(pages, **kw)  # type: ignore[arg-type]
    k = Kernel(m, config=config)
    # Zero page + one scratch page for the main task.
    return World(m, k, dram_baseline=k.dram_pages + 1)


@dataclass
class LoadedEnclave:
    """A test enclave loaded into ``proc`` like the kernel selftests' encl_build()."""

    proc: Process
    fd: int
    base: int
    size: int
    heap: int
    heap_pages: int
    segments: list[tuple[int, int, int]]  # (offset, length, prot)
    op_addr: int

    def call(
        self, op: Op, tcs: int = TCS1, run: U.sgx_enclave_run | None = None, function: int = U.EENTER
    ) -> tuple[int, Op, U.sgx_enclave_run]:
        run = run if run is not None else U.sgx_enclave_run()
        run.tcs = self.base + tcs
        self.proc.write(self.op_addr, bytes(op))
        ret = self.proc.vdso_sgx_enter_enclave(self.op_addr, 0, 0, function, 0, 0, run)
        out = Op.from_buffer_copy(self.proc.read(self.op_addr, ctypes.sizeof(Op)))
        return ret, out, run

    def put(self, value: int) -> None:
        ret, _, run = self.call(Op(type=OP_PUT, value=value))
        assert ret == 0 and run.function == U.EEXIT, run

    def get(self) -> int:
        ret, out, run = self.call(Op(type=OP_GET))
        assert ret == 0 and run.function == U.EEXIT, run
        return int(out.value)

    def mmap_all(self) -> None:
        for off, length, prot in self.segments:
            self.proc.mmap(self.base + off, length, prot, U.MAP_SHARED | U.MAP_FIXED, self.fd, 0)


def enclave_pages(heap_pages: int) -> list[tuple[int, bytes, int, bool]]:
    """(offset, data, SECINFO flags, measured) of the test enclave's pages, heap last."""
    code = program_image(PROGRAM)
    code += bytes(-len(code) % PAGE_SIZE)
    tcs1 = Tcs(ossa=SSA1, nssa=1, oentry=CODE, fslimit=0xFFFFFFFF, gslimit=0xFFFFFFFF).pack()
    tcs2 = Tcs(ossa=SSA2, nssa=1, oentry=CODE, fslimit=0xFFFFFFFF, gslimit=0xFFFFFFFF).pack()
    reg_rw = secinfo_flags(PageType.PT_REG, 3)
    pages = [
        (TCS1, tcs1, secinfo_flags(PageType.PT_TCS), True),
        (TCS2, tcs2, secinfo_flags(PageType.PT_TCS), True),
        (SSA1, bytes(PAGE_SIZE), reg_rw, True),
        (SSA2, bytes(PAGE_SIZE), reg_rw, True),
        (DATA1, bytes(PAGE_SIZE), reg_rw, True),
        (DATA2, bytes(PAGE_SIZE), reg_rw, True),
    ]
    for i in range(0, len(code), PAGE_SIZE):
        pages.append((CODE + i, code[i : i + PAGE_SIZE], secinfo_flags(PageType.PT_REG, 5), True))
    heap = pages[-1][0] + PAGE_SIZE
    for i in range(heap_pages):
        pages.append((heap + i * PAGE_SIZE, ZERO_PAGE, reg_rw, False))
    return pages


def encl_size_for(total: int) -> int:
    size = PAGE_SIZE
    while size < total:
        size <<= 1
    return size


def sign(size: int, pages: list[tuple[int, bytes, int, bool]], attributes: int) -> Sigstruct:
    meas = crypto.Measurement()
    meas._ecreate(1, size)
    for off, data, fl, measured in pages:
        hashed = fl & ~0x7 if (fl >> 8) & 0xFF == PageType.PT_TCS else fl
        meas.page(off, hashed, data, measured)
    sig = Sigstruct(
        attributes=attributes,
        attributes_mask=0xFFFF_FFFF_FFFF_FFFF,
        xfrm=3,
        xfrm_mask=0,
        mrenclave=meas.finalize(),
        vendor=0,
    )
    return crypto.sigstruct_sign(sig, signing_key())


def create_enclave(proc: Process, size: int, attributes: int = int(Attributes.MODE64BIT)) -> tuple[int, int]:
    """open + reserve an aligned range + SGX_IOC_ENCLAVE_CREATE; (fd, base)."""
    fd = proc.open("/dev/sgx_enclave", U.O_RDWR)
    area = proc.mmap(0, 2 * size, U.PROT_NONE, U.MAP_PRIVATE | U.MAP_ANONYMOUS, -1, 0)
    base = (area + size - 1) & ~(size - 1)
    secs = Secs(size=size, base=base, ssa_frame_size=1, attributes=attributes, xfrm=3)
    src = proc.alloc(secs.pack())
    proc.ioctl(fd, U.SGX_IOC_ENCLAVE_CREATE, U.sgx_enclave_create(src=src))
    proc.munmap(src, PAGE_SIZE)
    return fd, base


def add_pages(proc: Process, fd: int, pages: list[tuple[int, bytes, int, bool]]) -> None:
    """One SGX_IOC_ENCLAVE_ADD_PAGES per run of pages with equal flags."""
    i = 0
    while i < len(pages):
        j = i
        while (
            j + 1 < len(pages)
            and pages[j + 1][2:] == pages[i][2:]
            and pages[j + 1][0] == pages[j][0] + PAGE_SIZE
        ):
            j += 1
        run = pages[i : j + 1]
        length = len(run) * PAGE_SIZE
        src = proc.alloc(length)
        if not all(p[1] is ZERO_PAGE for p in run):
            data = b"".join(p[1] for p in run)
            if any(data):
                proc.write(src, data)
        si = proc.alloc(struct.pack("<Q", pages[i][2]) + bytes(56))
        arg = U.sgx_enclave_add_pages(
            src=src,
            offset=pages[i][0],
            length=length,
            secinfo=si,
            flags=U.SGX_PAGE_MEASURE if pages[i][3] else 0,
        )
        proc.ioctl(fd, U.SGX_IOC_ENCLAVE_ADD_PAGES, arg)
        assert arg.count == length
        proc.munmap(src, length)
        proc.munmap(si, PAGE_SIZE)
        i = j + 1


def build_enclave(
    proc: Process,
    heap_pages: int = 1,
    *,
    attributes: int = int(Attributes.MODE64BIT),
    init: bool = True,
    mmap: bool = True,
    extra_size: int = 0,
    provision: bool = False,
) -> LoadedEnclave:
    """Load the test enclave through the real ioctl path (selftests' encl_build)."""
    pages = enclave_pages(heap_pages)
    total = pages[-1][0] + PAGE_SIZE
    size = encl_size_for(total + extra_size)
    fd, base = create_enclave(proc, size, attributes)
    add_pages(proc, fd, pages)
    if provision:
        pfd = proc.open("/dev/sgx_provision", U.O_RDWR)
        proc.ioctl(fd, U.SGX_IOC_ENCLAVE_PROVISION, U.sgx_enclave_provision(fd=pfd))
        proc.close(pfd)
    if init:
        sig = sign(size, pages, attributes)
        addr = proc.alloc(sig.pack())
        proc.ioctl(fd, U.SGX_IOC_ENCLAVE_INIT, U.sgx_enclave_init(sigstruct=addr))
        proc.munmap(addr, PAGE_SIZE)
    heap = pages[-1][0] + PAGE_SIZE - heap_pages * PAGE_SIZE
    code_end = heap
    segments = [
        (TCS1, 2 * PAGE_SIZE, RW),
        (SSA1, 4 * PAGE_SIZE, RW),
        (CODE, code_end - CODE, RX),
    ]
    if heap_pages:
        segments.append((heap, heap_pages * PAGE_SIZE, RW))
    op_addr = proc.alloc(PAGE_SIZE)
    encl = LoadedEnclave(proc, fd, base, size, base + heap, heap_pages, segments, op_addr)
    if mmap:
        encl.mmap_all()
    return encl


def seeded(seed: int) -> random.Random:
    return random.Random(seed)


def pte_of(proc: Process, va: int) -> Pte:
    """The PTE mapping ``va`` in ``proc`` (the test fails if there is none)."""
    pte = proc.mm.lookup(va)
    assert pte is not None, f"no PTE for {va:#x}"
    return pte

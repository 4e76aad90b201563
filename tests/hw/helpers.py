"""Test helpers for sgxsim.hw: small machines, and enclaves built through raw ENCLS leaves.

Everything goes through :meth:`Machine.encls` with the operands Linux would pass
(``arch/x86/kernel/cpu/sgx/encls.h``): structures are written into ``m.dram`` first, EPC pages
are physical EPC addresses. Typical use::

    m = small_machine()
    encl = build_enclave(m)                      # ECREATE, EADD+EEXTEND, EINIT (TCS, SSA, data)
    encl.phys(0x2000)                            # EPC address of the page at enclave offset 0x2000

    encl = build_enclave(m, [tcs_page(0, ossa=0x1000), reg_page(0x1000)], init=False)
    assert einit(m, encl, sign(encl)) == SgxStatus.SUCCESS

The expected MRENCLAVE is computed independently of ``sgxsim.hw.crypto`` by
:func:`expected_mrenclave` (the algorithm of sgx-architecture.md §5 written out with hashlib),
so a successful EINIT also proves the leaves measured exactly those bytes.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import random
import struct
from collections.abc import Iterable, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from sgxsim.hw import crypto
from sgxsim.hw.arch import (
    PAGE_SIZE,
    Attributes,
    EinitToken,
    EnclsLeaf,
    LeafResult,
    Pageinfo,
    PageType,
    SecinfoFlags,
    Secs,
    SgxStatus,
    Sigstruct,
    Tcs,
    secinfo_flags,
)
from sgxsim.hw.epc import EpcSectionConfig, SecsState
from sgxsim.hw.machine import DEFAULT_EPC_BASE, Machine, MachineConfig
from sgxsim.rand import Rng

__all__ = [
    "DEFAULT_BASE",
    "EPC_BASE",
    "RW",
    "RWX",
    "Backing",
    "Enclave",
    "EpcPool",
    "PageSpec",
    "R",
    "W",
    "X",
    "build_enclave",
    "check",
    "eadd_page",
    "ecreate",
    "einit",
    "eldu_page",
    "epa_page",
    "epc_snapshot",
    "evict",
    "expected_mrenclave",
    "make_secs",
    "one_page_eadds",
    "one_page_eaugs",
    "one_page_eremoves",
    "other_signing_key",
    "put",
    "put_pageinfo",
    "put_secinfo",
    "reg_page",
    "sign",
    "signing_key",
    "small_machine",
    "tcs_page",
]

R = int(SecinfoFlags.R)
W = int(SecinfoFlags.W)
X = int(SecinfoFlags.X)
RW = R | W
RWX = R | W | X

#: Physical base of the EPC section of :func:`small_machine`.
EPC_BASE = DEFAULT_EPC_BASE
#: Default ELRANGE base of :func:`build_enclave` (1 TiB: canonical, aligned for any size <= 1 TiB).
DEFAULT_BASE = 1 << 40


def small_machine(*, seed: int = 0, epc_pages: int = 256, **config: object) -> Machine:
    """A machine with one EPC section of ``epc_pages`` pages at :data:`EPC_BASE` (4 CPUs by default).

    ``config`` overrides :class:`MachineConfig` fields (e.g. ``sgx2=False``, ``cpus_per_socket=2``).
    """
    cfg = MachineConfig(epc_sections=(EpcSectionConfig(EPC_BASE, epc_pages * PAGE_SIZE),))
    if config:
        cfg = cfg.replace(**config)
    return Machine(cfg, Rng(seed))


@functools.cache
def signing_key() -> rsa.RSAPrivateKey:
    """The test enclave-signing key: RSA-3072, e = 3, from ``random.Random(1)`` (computed once)."""
    return crypto.rsa3072_e3_keygen(random.Random(1))


@functools.cache
def other_signing_key() -> rsa.RSAPrivateKey:
    """A second signing key (``random.Random(2)``), for MRSIGNER-mismatch tests."""
    return crypto.rsa3072_e3_keygen(random.Random(2))


def check(result: LeafResult, what: str = "leaf") -> None:
    """Fail the test unless ``result`` is SUCCESS (with a readable message)."""
    assert result == SgxStatus.SUCCESS, f"{what} returned {result}"


# --------------------------------------------------------------------------------------------
# Memory operands


def put(m: Machine, data: bytes) -> int:
    """Write ``data`` (<= 4 KiB) at the start of a fresh DRAM page; its address (4 KiB aligned)."""
    assert len(data) <= PAGE_SIZE
    addr = m.dram.alloc_page()
    m.dram.write(addr, data)
    return addr


def put_secinfo(m: Machine, flags: int, reserved: bytes = bytes(56)) -> int:
    """A SECINFO {FLAGS, reserved} in DRAM; its address."""
    return put(m, struct.pack("<Q", flags) + reserved)


def put_pageinfo(m: Machine, linaddr: int = 0, srcpge: int = 0, secinfo: int = 0, secs: int = 0) -> int:
    """A PAGEINFO {LINADDR, SRCPGE, SECINFO/PCMD, SECS} in DRAM; its address."""
    return put(m, Pageinfo(linaddr=linaddr, srcpge=srcpge, secinfo=secinfo, secs=secs).pack())


class EpcPool:
    """Hands out free EPC pages (EPCM.VALID = 0) by physical address, lowest index first."""

    def __init__(self, m: Machine) -> None:
        self.m = m
        self._given: set[int] = set()

    def alloc(self) -> int:
        e = self.m.epc.epcm
        for idx in range(self.m.epc.npages):
            if not e.valid[idx] and idx not in self._given:
                self._given.add(idx)
                return self.m.epc.phys_of(idx)
        raise AssertionError("EPC exhausted")

    def release(self, phys: int) -> None:
        """Allow ``phys`` to be handed out again (after EREMOVE/EWB)."""
        idx = self.m.epc.index_of(phys)
        assert idx is not None
        self._given.discard(idx)


# --------------------------------------------------------------------------------------------
# Enclave contents


@dataclasses.dataclass(frozen=True)
class PageSpec:
    """One page to EADD: enclave ``offset``, SECINFO ``flags``, contents, EEXTEND or not."""

    offset: int
    flags: int
    data: bytes = b""
    measure: bool = True

    @property
    def page(self) -> bytes:
        """The 4096 source bytes (``data`` zero-padded)."""
        assert len(self.data) <= PAGE_SIZE
        return self.data + bytes(PAGE_SIZE - len(self.data))

    @property
    def measured_flags(self) -> int:
        """SECINFO.FLAGS as EADD hashes them (a TCS has R/W/X forced to 0)."""
        if (self.flags >> 8) & 0xFF == PageType.PT_TCS:
            return self.flags & ~0x7
        return self.flags


def reg_page(offset: int, data: bytes = b"", perms: int = RW, measure: bool = True) -> PageSpec:
    """A PT_REG page with permissions ``perms``."""
    return PageSpec(offset, secinfo_flags(PageType.PT_REG, perms), data, measure)


def tcs_page(
    offset: int,
    *,
    ossa: int,
    nssa: int = 1,
    oentry: int = 0,
    fslimit: int = 0xFFFF_FFFF,
    gslimit: int = 0xFFFF_FFFF,
    measure: bool = True,
    **fields: Any,
) -> PageSpec:
    """A PT_TCS page (SECINFO permissions 0, as Linux passes them) with the given TCS fields."""
    tcs = dataclasses.replace(
        Tcs(ossa=ossa, nssa=nssa, oentry=oentry, fslimit=fslimit, gslimit=gslimit), **fields
    )
    return PageSpec(offset, secinfo_flags(PageType.PT_TCS), tcs.pack(), measure)


def default_pages() -> list[PageSpec]:
    """A TCS at 0 (OSSA 0x1000, NSSA 1), its SSA page at 0x1000 and a data page at 0x2000."""
    return [
        tcs_page(0, ossa=0x1000, nssa=1, oentry=0x2000),
        reg_page(0x1000, perms=RW),
        reg_page(0x2000, b"sgxsim test data page", perms=RWX),
    ]


def expected_mrenclave(size: int, ssa_frame_size: int, pages: Iterable[PageSpec]) -> bytes:
    """MRENCLAVE per sgx-architecture.md §5, independent of ``sgxsim.hw.crypto``."""
    h = hashlib.sha256(struct.pack("<8sIQ44s", b"ECREATE", ssa_frame_size, size, b""))
    for spec in pages:
        h.update(struct.pack("<8sQQ40s", b"EADD", spec.offset, spec.measured_flags, b""))
        if spec.measure:
            data = spec.page
            for i in range(0, PAGE_SIZE, 256):
                h.update(struct.pack("<8sQ48s", b"EEXTEND", spec.offset + i, b""))
                h.update(data[i : i + 256])
    return h.digest()


def make_secs(
    size: int,
    base: int = DEFAULT_BASE,
    *,
    ssa_frame_size: int = 1,
    attributes: int = int(Attributes.MODE64BIT),
    xfrm: int = 0x3,
    miscselect: int = 0,
    **fields: object,
) -> Secs:
    """A SECS as software passes it to ECREATE."""
    return Secs(
        size=size,
        base=base,
        ssa_frame_size=ssa_frame_size,
        attributes=attributes,
        xfrm=xfrm,
        miscselect=miscselect,
        **fields,  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------------------------------
# Enclaves


@dataclasses.dataclass
class Enclave:
    """An enclave built by these helpers: where its SECS and pages live, and its identity."""

    m: Machine
    cpu: int
    secs: Secs
    secs_phys: int
    pool: EpcPool
    #: Enclave offset -> EPC physical address of each page added so far.
    pages: dict[int, int] = dataclasses.field(default_factory=dict)
    specs: list[PageSpec] = dataclasses.field(default_factory=list)
    sigstruct: Sigstruct | None = None

    @property
    def base(self) -> int:
        return self.secs.base

    @property
    def size(self) -> int:
        return self.secs.size

    @property
    def secs_index(self) -> int:
        idx = self.m.epc.index_of(self.secs_phys)
        assert idx is not None
        return idx

    @property
    def state(self) -> SecsState:
        """The SECS hidden state (must be resident)."""
        return self.m.epc.secs_state[self.secs_index]

    def phys(self, offset: int) -> int:
        """EPC physical address of the page at enclave ``offset``."""
        return self.pages[offset]

    def index(self, offset: int) -> int:
        """Global EPC page index of the page at enclave ``offset``."""
        idx = self.m.epc.index_of(self.pages[offset])
        assert idx is not None
        return idx

    def mrenclave(self) -> bytes:
        """MRENCLAVE of the pages added so far (reference algorithm)."""
        return expected_mrenclave(self.size, self.secs.ssa_frame_size, self.specs)


def ecreate(
    m: Machine, secs: Secs, *, cpu: int = 0, pool: EpcPool | None = None
) -> tuple[LeafResult, Enclave]:
    """ECREATE ``secs`` into a free EPC page, with an all-zero SECINFO (as Linux passes it)."""
    pool = pool if pool is not None else EpcPool(m)
    secs_phys = pool.alloc()
    pageinfo = put_pageinfo(m, srcpge=put(m, secs.pack()), secinfo=put_secinfo(m, 0))
    result = m.encls(cpu, EnclsLeaf.ECREATE, pageinfo, secs_phys)
    return result, Enclave(m, cpu, secs, secs_phys, pool)


def eadd_page(encl: Enclave, spec: PageSpec, epc_phys: int | None = None) -> LeafResult:
    """EADD ``spec`` (then its 16 EEXTENDs if measured); the first failing outcome or SUCCESS."""
    m, cpu = encl.m, encl.cpu
    target = epc_phys if epc_phys is not None else encl.pool.alloc()
    src = put(m, spec.page)
    pageinfo = put_pageinfo(m, encl.base + spec.offset, src, put_secinfo(m, spec.flags), encl.secs_phys)
    result = m.encls(cpu, EnclsLeaf.EADD, pageinfo, target)
    m.dram.free_page(src)
    if result != SgxStatus.SUCCESS:
        return result
    encl.pages[spec.offset] = target
    encl.specs.append(spec)
    if spec.measure:
        for chunk in range(0, PAGE_SIZE, 256):
            result = m.encls(cpu, EnclsLeaf.EEXTEND, encl.secs_phys, target + chunk)
            if result != SgxStatus.SUCCESS:
                return result
    return SgxStatus.SUCCESS


def sign(
    encl: Enclave | None = None,
    *,
    mrenclave: bytes | None = None,
    key: rsa.RSAPrivateKey | None = None,
    attributes: int | None = None,
    xfrm: int | None = None,
    attributes_mask: int = ~int(Attributes.INIT) & ((1 << 64) - 1),
    xfrm_mask: int = (1 << 64) - 1,
    miscselect: int | None = None,
    misc_mask: int = 0xFFFF_FFFF,
    isvprodid: int = 0,
    isvsvn: int = 0,
    **fields: object,
) -> Sigstruct:
    """A SIGSTRUCT for ``encl`` (its reference MRENCLAVE and SECS attributes), signed with ``key``.

    Defaults mirror the kernel selftest's ``encl_measure``: the signed ATTRIBUTES/XFRM/MISCSELECT
    are the enclave's, masks require all of them except INIT. ``fields`` set other SIGSTRUCT
    fields before signing (e.g. ``vendor=0x8086``).
    """
    if encl is not None:
        mrenclave = encl.mrenclave() if mrenclave is None else mrenclave
        attributes = encl.secs.attributes if attributes is None else attributes
        xfrm = encl.secs.xfrm if xfrm is None else xfrm
        miscselect = encl.secs.miscselect if miscselect is None else miscselect
    sig = Sigstruct(
        mrenclave=mrenclave if mrenclave is not None else bytes(32),
        attributes=attributes or 0,
        xfrm=xfrm or 0,
        attributes_mask=attributes_mask,
        xfrm_mask=xfrm_mask,
        miscselect=miscselect or 0,
        misc_mask=misc_mask,
        isvprodid=isvprodid,
        isvsvn=isvsvn,
        date=0x20250101,
        **fields,  # type: ignore[arg-type]
    )
    return crypto.sigstruct_sign(sig, key if key is not None else signing_key())


def einit(
    m: Machine,
    encl: Enclave,
    sig: Sigstruct,
    *,
    token: EinitToken | None = None,
    cpu: int | None = None,
    set_le_hash: bool = True,
) -> LeafResult:
    """EINIT with ``sig`` (and ``token``, default all-zero as Linux passes it).

    ``set_le_hash`` writes IA32_SGXLEPUBKEYHASH = MRSIGNER first, as Linux's sgx_encl_init does.
    """
    cpu = encl.cpu if cpu is None else cpu
    if set_le_hash:
        m.cpus[cpu].le_pubkey_hash = crypto.mrsigner(sig.modulus)
    sig_addr = put(m, sig.pack())
    token_addr = put(m, (token if token is not None else EinitToken()).pack())
    result = m.encls(cpu, EnclsLeaf.EINIT, sig_addr, encl.secs_phys, token_addr)
    if result == SgxStatus.SUCCESS:
        encl.sigstruct = sig
    return result


def build_enclave(
    m: Machine,
    pages: Sequence[PageSpec] | None = None,
    *,
    cpu: int = 0,
    size: int | None = None,
    base: int = DEFAULT_BASE,
    ssa_frame_size: int = 1,
    attributes: int = int(Attributes.MODE64BIT),
    xfrm: int = 0x3,
    miscselect: int = 0,
    debug: bool = False,
    init: bool = True,
    pool: EpcPool | None = None,
    key: rsa.RSAPrivateKey | None = None,
    isvprodid: int = 0,
    isvsvn: int = 0,
) -> Enclave:
    """ECREATE + EADD/EEXTEND of ``pages`` (default :func:`default_pages`) + EINIT; asserts success.

    ``size`` defaults to the smallest power of two >= 8 KiB covering the pages. ``debug`` adds
    ATTRIBUTES.DEBUG. With ``init=False`` the enclave is left uninitialized.
    """
    specs = list(default_pages() if pages is None else pages)
    if size is None:
        end = max((s.offset + PAGE_SIZE for s in specs), default=PAGE_SIZE)
        size = 2 * PAGE_SIZE
        while size < end:
            size *= 2
    if debug:
        attributes |= int(Attributes.DEBUG)
    secs = make_secs(
        size, base, ssa_frame_size=ssa_frame_size, attributes=attributes, xfrm=xfrm, miscselect=miscselect
    )
    result, encl = ecreate(m, secs, cpu=cpu, pool=pool)
    check(result, "ECREATE")
    for spec in specs:
        check(eadd_page(encl, spec), f"EADD/EEXTEND of offset {spec.offset:#x}")
    if init:
        check(einit(m, encl, sign(encl, key=key, isvprodid=isvprodid, isvsvn=isvsvn)), "EINIT")
    return encl


# --------------------------------------------------------------------------------------------
# Paging


@dataclasses.dataclass(frozen=True)
class Backing:
    """Where an EWB put a page: the ciphertext page, the PCMD and the VA slot used."""

    srcpge: int
    pcmd: int
    va_slot: int
    linaddr: int


def epa_page(m: Machine, pool: EpcPool, *, cpu: int = 0) -> int:
    """EPA a free EPC page into a Version Array; its physical address."""
    va = pool.alloc()
    check(m.encls(cpu, EnclsLeaf.EPA, int(PageType.PT_VA), va), "EPA")
    return va


def evict(
    m: Machine, epc_phys: int, va_slot: int, *, cpu: int = 0, block: bool = True, secs_phys: int | None = None
) -> tuple[LeafResult, Backing]:
    """EWB ``epc_phys`` into fresh DRAM pages; with ``block`` first EBLOCK it and ETRACK ``secs_phys``.

    Returns the EWB outcome and where the page went (the PAGEINFO.LINADDR EWB wrote back).
    """
    if block:
        check(m.encls(cpu, EnclsLeaf.EBLOCK, 0, epc_phys), "EBLOCK")
        if secs_phys is not None:
            check(m.encls(cpu, EnclsLeaf.ETRACK, 0, secs_phys), "ETRACK")
    srcpge = m.dram.alloc_page()
    pcmd = m.dram.alloc_page()
    pageinfo = put_pageinfo(m, 0, srcpge, pcmd, 0)
    result = m.encls(cpu, EnclsLeaf.EWB, pageinfo, epc_phys, va_slot)
    linaddr = struct.unpack("<Q", m.dram.read(pageinfo, 8))[0]
    return result, Backing(srcpge, pcmd, va_slot, linaddr)


def eldu_page(
    m: Machine,
    backing: Backing,
    epc_phys: int,
    *,
    secs_phys: int = 0,
    cpu: int = 0,
    blocked: bool = False,
    linaddr: int | None = None,
) -> LeafResult:
    """ELDU (or ELDB) the page in ``backing`` into ``epc_phys``; ``secs_phys`` = 0 for SECS/VA pages."""
    la = backing.linaddr if linaddr is None else linaddr
    pageinfo = put_pageinfo(m, la, backing.srcpge, backing.pcmd, secs_phys)
    leaf = EnclsLeaf.ELDB if blocked else EnclsLeaf.ELDU
    return m.encls(cpu, leaf, pageinfo, epc_phys, backing.va_slot)


# --------------------------------------------------------------------------------------------
# Comparing machines (batch paths against the one-page path)


def epc_snapshot(m: Machine) -> dict[str, object]:
    """Everything the ENCLS leaves change, as comparable values (DRAM excluded).

    EPCM arrays, stored page contents, each SECS's hidden state (incl. its MRENCLAVE so far),
    leaf statistics, simulated time, CPUSVN and the paging state.
    """
    e = m.epc.epcm
    arrays = {name: getattr(e, name).tobytes() for name in e.__slots__ if name != "npages"}
    secs = {
        k: (
            s.eid,
            s.base,
            s.size,
            s.child_count,
            s.initialized,
            s.attributes,
            s.epoch,
            s.measurement.copy().finalize(),
            s.mrenclave,
            s.mrsigner,
        )
        for k, s in m.epc.secs_state.items()
    }
    return {
        "epcm": arrays,
        "contents": {k: bytes(v) for k, v in m.epc.contents.items()},
        "secs": secs,
        "stats": dict(m.stats),
        "now": m.clock.now_ns(),
        "cpusvn": m.cr_cpusvn,
        "next_eid": m.cr_next_eid,
        "paging_version": m.cr_paging_version,
        "evicted_secs": sorted(m.evicted_secs),
        "tcs_threads": sorted(m.tcs_threads),
    }


def one_page_eadds(
    m: Machine,
    cpu: int,
    secs_phys: int,
    epc_phys: Sequence[int],
    linaddrs: Sequence[int],
    flags: int,
    src_phys: Sequence[int] | None = None,
) -> tuple[int, LeafResult]:
    """EADD page by page with PAGEINFO/SECINFO in DRAM, stopping at the first failure.

    The one-page reference for :func:`sgxsim.hw.encls.eadd_batch` (``src_phys`` None = zero pages).
    """
    secinfo = put_secinfo(m, flags)
    zero = m.dram.alloc_page()
    for i, (epc, la) in enumerate(zip(epc_phys, linaddrs, strict=True)):
        src = zero if src_phys is None else src_phys[i]
        result = m.encls(cpu, EnclsLeaf.EADD, put_pageinfo(m, la, src, secinfo, secs_phys), epc)
        if result != SgxStatus.SUCCESS:
            return i, result
    return len(epc_phys), SgxStatus.SUCCESS


def one_page_eaugs(
    m: Machine, cpu: int, secs_phys: int, epc_phys: Sequence[int], linaddrs: Sequence[int]
) -> tuple[int, LeafResult]:
    """EAUG page by page, stopping at the first failure (reference for ``eaug_batch``)."""
    for i, (epc, la) in enumerate(zip(epc_phys, linaddrs, strict=True)):
        result = m.encls(cpu, EnclsLeaf.EAUG, put_pageinfo(m, la, 0, 0, secs_phys), epc)
        if result != SgxStatus.SUCCESS:
            return i, result
    return len(epc_phys), SgxStatus.SUCCESS


def one_page_eremoves(m: Machine, cpu: int, epc_phys: Sequence[int]) -> list[LeafResult]:
    """EREMOVE page by page (reference for ``eremove_batch``)."""
    return [m.encls(cpu, EnclsLeaf.EREMOVE, 0, p) for p in epc_phys]

"""ENCLU: the user-mode SGX leaves, asynchronous enclave exits (AEX) and the enclave execution engine.

Models: Intel SDM Vol. 3D ch. 38 (ENCLU leaf pseudo-code: EENTER, ERESUME, EEXIT, EREPORT,
EGETKEY, EACCEPT, EACCEPTCOPY, EMODPE), ch. 36-37 (enclave access control, EPCM checks) and ch.
40 (AEX); ``shared/reference/sgx-architecture.md`` sections 1.6, 2 (vDSO), 4.11-4.14.

Execution model
===============

**Entry from outside.** :func:`execute` runs ENCLU from a logical processor that is not in
enclave mode: EENTER (RBX = TCS linear address, RCX = AEP) or ERESUME. The TCS address is
translated through ``lp.page_table`` (the kernel's mm for the running process; x86 #PF error
codes, e.g. 0x6 not-present write, 0x7 write-protect), then the SDM's checks run in the SDM's
order: TCS must resolve to a valid, unblocked, non-PENDING/MODIFIED PT_TCS EPC page whose
ENCLAVEADDRESS is RBX (else #PF with PFEC.SGX), the enclave must be initialized (#GP), CSSA < NSSA
for EENTER / CSSA > 0 for ERESUME (#GP), the SSA frame pages must be valid RW PT_REG pages of the
enclave (#PF with PFEC.SGX when the page walk succeeds), TCS.STATE must be INACTIVE (#GP). An
enclave whose EPC pages were removed (EPC loss, or the kernel emptying the EPC for EUPDATESVN)
therefore faults on EENTER/ERESUME as hardware does: #PF with the SGX bit on the TCS page if it
is still mapped, an ordinary not-present #PF if the kernel zapped the PTE. A leaf that faults
before entering returns the :class:`~sgxsim.hw.arch.Fault`; once in enclave mode it returns an
:class:`EnclaveExit` when the enclave leaves (EEXIT) or is interrupted (AEX).

**Enclave code is enclave memory.** [MODEL] At ``BASE + TCS.OENTRY`` the enclave holds a program
image, ``PROGRAM_MAGIC`` (``b"SGXPY\\0\\0\\x01"``) + u32 little-endian length + UTF-8 Python
source, built by :func:`program_image`. The processor fetches it from the enclave's own EPC pages
through the instruction-fetch checks (PTE present, user, not NX; EPCM valid, this enclave,
ENCLAVEADDRESS, PT_REG, X, not PENDING/MODIFIED/BLOCKED), so the program is part of MRENCLAVE and
a flipped byte fails EINIT. A bad image is an invalid opcode (#UD). The source is compiled once
per SHA-256 (cache on the machine) and executed in a fresh namespace on every entry: nothing
survives between entries except enclave memory. Its ``enclave_entry(ctx)`` function runs.

**The CPU in enclave mode is :class:`EnclaveContext`.** Registers are attributes (``rax`` =
CSSA and ``rcx`` = return address at EENTER; ``rdx``, ``rsi``, ``rdi``, ``r8``, ``r9`` pass
through from the host). ``read``/``write`` walk the page table (setting Accessed/Dirty) and, inside
ELRANGE, the EPCM; outside ELRANGE data accesses reach ordinary memory (and EPC there reads as the
abort page, all 0xFF, writes dropped). The in-enclave leaves are methods (``ereport``, ``egetkey``,
``eaccept``, ``eacceptcopy``, ``emodpe``, ``eexit``). Before every access the machine's optional
``on_enclave_step(lp)`` hook runs (the scheduler's preemption point), then a pending interrupt
(``lp.pending_interrupt``, how the kernel's IPIs force exits) is taken as an AEX.

**AEX keeps the continuation.** Enclave code runs in a greenlet whose parent is the greenlet
that executed EENTER/ERESUME. A fault (or interrupt) saves the GPRs to SSA[CSSA] (EXITINFO per
the SDM, MISC.EXINFO when selected), increments CSSA in the TCS page, marks the TCS inactive,
leaves enclave mode (removing the LP from the enclave's tracking sets), charges the AEX cost and
switches back to that caller with the synthetic exit state (RAX=3, RBX=TCS, RCX=AEP, others 0;
a #PF's address has its low 12 bits cleared). The suspended greenlet is kept in
``m.tcs_threads[tcs_index]`` by SSA frame number. ERESUME restores the GPRs from the SSA bytes,
decrements CSSA and switches back into it, re-parented to the new caller, and the faulting access
is retried. An EENTER while frames are suspended (CSSA > 0) starts a fresh run in the next frame,
the exception-handler entry the selftests use. EEXIT unwinds the program and returns to the
caller.

Differs: RSP/RBP, FS/GS, XSAVE state, debug and performance-monitoring effects are not modelled
(SSA.U_RSP/U_RBP are not written); RIP is the address of the running program image; an
exception handler that edits SSA.RIP does not redirect a suspended continuation (a frame without
continuation, e.g. after kexec, restarts the program image at SSA.RIP); AEX-Notify is not
modelled (ERESUME always resumes); the processor is in 64-bit mode with CR4.OSXSAVE=1 and
XCR0 = every supported XFRM bit. A Python exception escaping enclave code is a bug in the model
input: the processor takes an AEX with #UD (keeping the machine consistent) and ``execute``
raises :class:`~sgxsim.errors.InvalidArgument` chained to it.
"""

from __future__ import annotations

import builtins
import dataclasses
import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from types import CodeType
from typing import TYPE_CHECKING, Any, NoReturn

import greenlet

from sgxsim.errors import InvalidArgument, ModelInvariantError
from sgxsim.hw.arch import (
    KEYPOLICY_KSS_MASK,
    KEYPOLICY_RESERVED_MASK,
    MISC_EXINFO,
    PAGE_SIZE,
    SGX_SSA_GPRS_SIZE,
    SGX_SSA_MISC_EXINFO_SIZE,
    SGX_TCS_DBGOPTIN,
    SSA_EXIT_TYPE_HARDWARE,
    SSA_EXIT_TYPE_SOFTWARE,
    Attributes,
    EncluLeaf,
    Fault,
    KeyName,
    KeyPolicy,
    Keyrequest,
    PageType,
    PfError,
    Report,
    Secinfo,
    SecinfoFlags,
    SgxStatus,
    SsaGpr,
    Targetinfo,
    Tcs,
    Vector,
    cpusvn_le,
    gp0,
    pf,
    secinfo_page_type,
    ssa_exitinfo,
)
from sgxsim.hw.crypto import PKCS1_SHA256_PADDING, KeyDependencies, aes_cmac, derive_key

if TYPE_CHECKING:
    from sgxsim.hw.cpu import LogicalProcessor, PageTable
    from sgxsim.hw.epc import SecsState
    from sgxsim.hw.machine import Machine

__all__ = [
    "ENCLU_INSN_SIZE",
    "HARDCODED_PKCS1_5_PADDING",
    "PROGRAM_HEADER_SIZE",
    "PROGRAM_MAGIC",
    "TCS_STATE_ACTIVE",
    "TCS_STATE_INACTIVE",
    "EnclaveContext",
    "EnclaveExit",
    "drop_tcs_threads",
    "execute",
    "program_image",
    "xsave_frame_size",
]

# ---------------------------------------------------------------------------------------
# Constants

#: [MODEL] Magic opening an enclave program image (format version 1).
PROGRAM_MAGIC = b"SGXPY\x00\x00\x01"
#: Magic + u32 little-endian source length.
PROGRAM_HEADER_SIZE = len(PROGRAM_MAGIC) + 4
#: Length of the ENCLU instruction (0F 01 D7): EENTER's RCX output is the address after it.
ENCLU_INSN_SIZE = 3

#: [MODEL] TCS.STATE encodings (the SDM names only ACTIVE/INACTIVE; EADD and EACCEPT require 0).
TCS_STATE_INACTIVE = 0
TCS_STATE_ACTIVE = 1
#: TCS.FLAGS bits EENTER/ERESUME accept: DBGOPTIN (bit 0) and AEXNOTIFY (bit 1).
TCS_FLAGS_AEXNOTIFY = 0x2
_TCS_FLAGS_ENTRY_RESERVED = 0xFFFF_FFFF_FFFF_FFFC

#: ATTRIBUTES bits every EGETKEY derivation binds: INIT and DEBUG (REQUIRED_SEALING_MASK).
REQUIRED_SEALING_MASK = int(Attributes.INIT | Attributes.DEBUG)

#: The SDM's HARDCODED_PKCS1_5_PADDING (352 bytes; the top of a PKCS#1 v1.5 SHA-256 encoded
#: message in SIGSTRUCT byte order): EGETKEY's REPORT key uses it instead of SECS.PADDING.
HARDCODED_PKCS1_5_PADDING = PKCS1_SHA256_PADDING

_U64 = (1 << 64) - 1
_PAGE_MASK = ~(PAGE_SIZE - 1) & _U64
_TCS_STATE_OFF = Tcs.offsetof("state")
_TCS_CSSA_OFF = Tcs.offsetof("cssa")
_TCS_AEP_OFF = Tcs.offsetof("aep")
_RFLAGS_DEFAULT = 0x202  # IF and the always-one bit 1

#: Standard-format XSAVE component (offset, size) for XFRM bits >= 2 (CPUID.(0xD, i)).
_XSAVE_COMPONENTS: dict[int, tuple[int, int]] = {
    2: (576, 256),  # AVX
    3: (960, 64),  # MPX BNDREGS
    4: (1024, 64),  # MPX BNDCSR
    5: (1088, 64),  # AVX-512 opmask
    6: (1152, 512),  # ZMM_Hi256
    7: (1664, 1024),  # Hi16_ZMM
    9: (2688, 8),  # PKRU
}

#: Exceptions EXITINFO reports unconditionally; #PF and #GP only with MISCSELECT.EXINFO
#: (SDM "EXITINFO" table). #BP (INT3) is a software exception.
_EXITINFO_ALWAYS = frozenset({0, 1, 3, 5, 6, 16, 17, 19})
_GPR_NAMES = ("rax", "rcx", "rdx", "rbx", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
_EEXIT_GPRS = frozenset(_GPR_NAMES) - {"rax", "rbx", "rcx"}


def xsave_frame_size(xfrm: int) -> int:
    """Size of the standard-format XSAVE area for ``xfrm`` (legacy 512 + header 64 + components).

    Models: SDM EENTER/ERESUME ``compute_XSAVE_frame_size`` (which SSA pages must be checked).
    """
    size = 576
    for bit, (off, n) in _XSAVE_COMPONENTS.items():
        if xfrm >> bit & 1:
            size = max(size, off + n)
    return size


def program_image(source: str) -> bytes:
    """The bytes a builder places at ``BASE + OENTRY``: magic, u32 LE length, UTF-8 source.

    [MODEL] The format the engine fetches and runs. Raises InvalidArgument for a non-str source
    or one that does not compile (so builders fail early rather than at EENTER).
    """
    if not isinstance(source, str):
        raise InvalidArgument(f"program source must be a str, got {type(source).__name__}")
    raw = source.encode()
    try:
        compile(raw, "<enclave>", "exec")
    except (SyntaxError, ValueError) as exc:
        raise InvalidArgument(f"enclave program does not compile: {exc}") from exc
    return PROGRAM_MAGIC + struct.pack("<I", len(raw)) + raw


def _canonical(addr: int) -> bool:
    """True iff a 64-bit linear address is canonical with 48-bit linear addresses."""
    top = addr >> 47
    return top == 0 or top == (1 << 17) - 1


def _u64(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _U64:
        raise InvalidArgument(f"{name} must be an int in [0, 2**64), got {value!r}")
    return value


# ---------------------------------------------------------------------------------------
# Exit events


@dataclass(frozen=True)
class EnclaveExit:
    """How the processor left enclave mode: EEXIT, or an AEX (``leaf`` = ERESUME, RAX = 3).

    ``rax``..``r9`` are the GPRs the host sees. After EEXIT they are whatever the enclave left
    (RAX = 4, RBX = target, RCX = AEP); after an AEX the synthetic state (RAX = 3, RBX = TCS,
    RCX = AEP, others 0). ``fault`` is the exception that caused an AEX as delivered to the host
    (None for an interrupt AEX or EEXIT); ``target`` is EEXIT's RBX, or the AEP after an AEX.
    """

    leaf: int
    rax: int
    rbx: int
    rcx: int
    rdx: int = 0
    rsi: int = 0
    rdi: int = 0
    r8: int = 0
    r9: int = 0
    fault: Fault | None = None
    target: int = 0

    @property
    def is_aex(self) -> bool:
        """True for an asynchronous exit (the vDSO reports ``run.function == ERESUME``)."""
        return self.leaf == EncluLeaf.ERESUME


class _EExit(BaseException):
    """Unwinds the enclave program after EEXIT (BaseException: enclave code cannot catch it)."""

    def __init__(self, event: EnclaveExit) -> None:
        super().__init__("EEXIT")
        self.event = event


@dataclass(frozen=True)
class _Crash:
    """The enclave program raised a Python exception; the processor took a #UD AEX."""

    event: EnclaveExit
    exc: BaseException


@dataclass
class _Frame:
    """A suspended enclave thread: the greenlet and the context it runs with."""

    glet: Any
    ctx: EnclaveContext


@dataclass
class _TcsThread:
    """Continuations of one TCS, by SSA frame number; bound to the enclave's EID and TCS address."""

    eid: int
    tcs_la: int
    frames: dict[int, _Frame] = field(default_factory=dict)


def _kill(glet: Any) -> None:
    """Unwind a suspended enclave greenlet now (deterministically, not at garbage collection)."""
    if glet is not None and not glet.dead and glet is not greenlet.getcurrent():
        glet.parent = greenlet.getcurrent()
        glet.throw(greenlet.GreenletExit)


def drop_tcs_threads(m: Machine, tcs_index: int) -> None:
    """Discard the continuations kept for the TCS page at ``tcs_index`` (EREMOVE of that page).

    Not needed when a TCS is paged out (EWB/ELDU): continuations are found again by EID and TCS
    linear address, whatever EPC page the TCS is reloaded into.
    """
    rec = m.tcs_threads.pop(tcs_index, None)
    if isinstance(rec, _TcsThread):
        for frame in list(rec.frames.values()):
            _kill(frame.glet)
        rec.frames.clear()


def _thread_record(m: Machine, tcs_index: int, eid: int, tcs_la: int) -> _TcsThread:
    """The continuation record of a TCS, following it if it moved to another EPC page."""
    rec = m.tcs_threads.get(tcs_index)
    if isinstance(rec, _TcsThread) and rec.eid == eid and rec.tcs_la == tcs_la:
        return rec
    if rec is not None:
        drop_tcs_threads(m, tcs_index)
    for key, other in list(m.tcs_threads.items()):
        if isinstance(other, _TcsThread) and other.eid == eid and other.tcs_la == tcs_la:
            del m.tcs_threads[key]
            m.tcs_threads[tcs_index] = other
            return other
    fresh = _TcsThread(eid, tcs_la)
    m.tcs_threads[tcs_index] = fresh
    return fresh


# ---------------------------------------------------------------------------------------
# Address translation and EPCM checks (shared by entry checks, data accesses and leaves)

_READ, _WRITE, _FETCH = 0, 1, 2
#: The EPCM permission bit each kind of access needs (R, W, X).
_PERM_BIT = (0x1, 0x2, 0x4)


def _pf_code(access: int, present: bool, sgx: bool = False) -> int:
    code = int(PfError.U)
    if access == _WRITE:
        code |= PfError.W
    elif access == _FETCH:
        code |= PfError.I
    if present:
        code |= PfError.P
    if sgx:
        code |= PfError.SGX
    return code


def _walk(pt: PageTable, la: int, access: int, fault_addr: int | None = None) -> int | Fault:
    """Translate ``la`` for a user-mode access; the physical address, or the paging #PF.

    Models: SDM Vol. 3A §4.5/§4.7 (4-level paging; error code P/W/U/I). Sets the PTE's Accessed
    bit, and Dirty for a write, once the walk succeeds.
    """
    addr = la if fault_addr is None else fault_addr
    pte = pt.lookup(la & _PAGE_MASK)
    if pte is None or not pte.present:
        return pf(addr, _pf_code(access, present=False))
    if not pte.user or (access == _WRITE and not pte.writable) or (access == _FETCH and pte.nx):
        return pf(addr, _pf_code(access, present=True))
    pte.accessed = True
    if access == _WRITE:
        pte.dirty = True
    return (pte.phys & _PAGE_MASK) | (la & (PAGE_SIZE - 1))


def _page_table(lp: LogicalProcessor) -> PageTable:
    pt = lp.page_table
    if pt is None:
        raise InvalidArgument(f"CPU {lp.id} has no page table loaded (CR3); ENCLU needs a process context")
    return pt


def _epc_page(m: Machine, pt: PageTable, la: int, access: int, fault_addr: int | None = None) -> int | Fault:
    """Translate an address that must resolve to EPC: the global EPC page index, or the #PF.

    Not-present/permission faults are ordinary #PFs; a mapping to non-EPC memory is an SGX
    access-control #PF (PFEC.SGX).
    """
    phys = _walk(pt, la, access, fault_addr)
    if isinstance(phys, Fault):
        return phys
    idx = m.epc.index_of(phys)
    if idx is None:
        return pf(la if fault_addr is None else fault_addr, _pf_code(access, True, sgx=True))
    return idx


def _sgx_pf(addr: int, access: int) -> Fault:
    return pf(addr, _pf_code(access, True, sgx=True))


def _ssa_page_ok(m: Machine, idx: int, la: int, secs: int) -> bool:
    """EENTER/ERESUME's SSA page conditions: valid, unblocked, not PENDING/MODIFIED, PT_REG, RW."""
    e = m.epc.epcm
    return bool(
        e.valid[idx]
        and not e.blocked[idx]
        and not e.pending[idx]
        and not e.modified[idx]
        and int(e.linaddr[idx]) == la & _PAGE_MASK
        and e.pt[idx] == PageType.PT_REG
        and int(e.secs[idx]) == secs
        and (int(e.rwx[idx]) & 0x3) == 0x3
    )


def _operand_page(m: Machine, lp: LogicalProcessor, la: int, access: int, need: int) -> int | Fault:
    """An in-enclave leaf's memory operand: PT_REG page of the current enclave with ``need`` perms.

    Models: the EREPORT/EGETKEY/EACCEPT/EMODPE operand checks (VALID, BLOCKED, PT_REG,
    ENCLAVESECS = CR_ACTIVE_SECS, not PENDING/MODIFIED, ENCLAVEADDRESS, R or W): #PF otherwise.
    """
    idx = _epc_page(m, _page_table(lp), la, access)
    if isinstance(idx, Fault):
        return idx
    e = m.epc.epcm
    if (
        not e.valid[idx]
        or e.blocked[idx]
        or e.pt[idx] != PageType.PT_REG
        or int(e.secs[idx]) != lp.active_secs
        or e.pending[idx]
        or e.modified[idx]
        or int(e.linaddr[idx]) != la & _PAGE_MASK
        or (int(e.rwx[idx]) & need) != need
    ):
        return _sgx_pf(la, access)
    return idx


# ---------------------------------------------------------------------------------------
# Tracking: the [MODEL] epoch state kept in SecsState (see hw.epc / hw.encls ETRACK)


def _leave_enclave(m: Machine, lp: LogicalProcessor) -> None:
    """Leave enclave mode: CR_ACTIVE_SECS/CR_TCS cleared, LP removed from the tracking sets.

    An LP that was inside when the last ETRACK ran stops holding that tracking cycle open
    (EEXIT and AEX both count).
    """
    secs = lp.active_secs
    lp.active_secs = None
    lp.active_tcs = None
    if secs is None:
        return
    state = m.epc.secs_state.get(secs)
    if state is None:
        return
    state.inside.pop(lp.id, None)
    state.track_waiting.discard(lp.id)


def _tracking_done(state: SecsState, stamp: int) -> bool:
    """[MODEL] True iff an ETRACK ran after the page's EMODPR/EMODT and its cycle completed.

    The same rule as EWB's (hw.encls): the page's ``block_epoch`` stamp is older than the
    enclave's epoch, and no processor that was inside at the last ETRACK is still inside.
    """
    return stamp < state.epoch and not state.track_waiting


# ---------------------------------------------------------------------------------------
# The processor in enclave mode


class EnclaveContext:
    """The logical processor executing enclave code: registers, memory accesses, ENCLU leaves.

    Every method must be called from the enclave's own thread (the greenlet EENTER started).
    Architectural faults never surface as Python exceptions here: the processor takes an AEX and,
    after ERESUME, retries the access, so a method returns only when the access completed.
    """

    def __init__(
        self,
        m: Machine,
        lp: LogicalProcessor,
        secs_index: int,
        state: SecsState,
        tcs_index: int,
        tcs_la: int,
        tcs: Tcs,
        aep: int,
        rip: int,
    ) -> None:
        self.m = m
        self.lp = lp
        self.secs_index = secs_index
        self.state = state
        self.tcs_index = tcs_index
        #: Linear address of the TCS this thread entered through.
        self.tcs = tcs_la
        self.ossa = tcs.ossa
        self.nssa = tcs.nssa
        #: ELRANGE.
        self.base = state.base
        self.size = state.size
        self.aep = aep
        #: [MODEL] Address of the running program image.
        self.rip = rip
        self.fsbase = (state.base + tcs.ofsbase) & _U64
        self.gsbase = (state.base + tcs.ogsbase) & _U64
        self.rflags = _RFLAGS_DEFAULT
        self.rax = self.rbx = self.rcx = self.rdx = self.rsi = self.rdi = 0
        self.r8 = self.r9 = self.r10 = self.r11 = self.r12 = self.r13 = self.r14 = self.r15 = 0
        #: Current SSA frame (TCS.CSSA while inside) and where its GPR area is (EPC index, offset).
        self.frame = 0
        self._gpr_loc = (0, 0)
        self._glet: Any = None
        self._caller: Any = None
        self._dead = False
        self._exit_event: EnclaveExit | None = None

    # -- registers ------------------------------------------------------------------------

    def _regs(self) -> dict[str, int]:
        return {name: int(getattr(self, name)) & _U64 for name in _GPR_NAMES}

    def ssa_gpr(self, frame: int) -> SsaGpr:
        """Read SSA frame ``frame``'s GPR area (as an exception handler does), via normal reads."""
        if not isinstance(frame, int) or isinstance(frame, bool) or frame < 0:
            raise InvalidArgument(f"SSA frame must be a non-negative int, got {frame!r}")
        sfs = self.state.ssa_frame_size * PAGE_SIZE
        addr = (self.base + self.ossa + frame * sfs + sfs - SGX_SSA_GPRS_SIZE) & _U64
        return SsaGpr.unpack(self.read(addr, SGX_SSA_GPRS_SIZE))

    # -- access machinery -------------------------------------------------------------------

    def _gone(self) -> None:
        """Refuse to run for a thread that left (EEXIT) or is being discarded."""
        if self._dead:
            raise greenlet.GreenletExit
        if self._exit_event is not None:
            raise _EExit(self._exit_event)

    def _check_current(self) -> None:
        if self._glet is None or greenlet.getcurrent() is not self._glet:
            raise InvalidArgument("EnclaveContext used outside the enclave thread that owns it")
        self._gone()

    def _step(self) -> None:
        """An instruction boundary: the scheduler's preemption point, then pending interrupts."""
        self._gone()
        hook: Callable[[LogicalProcessor], None] | None = self.m.on_enclave_step
        if hook is not None:
            try:
                hook(self.lp)
            except greenlet.GreenletExit:
                self._dead = True
                raise
        while self.lp.pending_interrupt:
            self.lp.pending_interrupt = False
            self._deliver(None)

    def _deliver(self, fault: Fault | None) -> None:
        """Take an AEX for ``fault`` (None: interrupt); returns when ERESUME resumes this thread."""
        event = _aex(self, fault)
        try:
            back = self._caller.switch(event)
        except greenlet.GreenletExit:
            self._dead = True
            raise
        if back is not _RESUME:
            raise ModelInvariantError(f"enclave thread resumed by something other than ERESUME: {back!r}")

    def _until_ok(self, attempt: Callable[[], Any]) -> Any:
        """Run a leaf body: on a Fault take the AEX and retry after ERESUME."""
        self._check_current()
        while True:
            self._step()
            out = attempt()
            if not isinstance(out, Fault):
                return out
            self._deliver(out)

    def _data_page(self, la: int, access: int) -> tuple[str, int] | Fault:
        """Check one page of a data access or fetch; where it lands: ("epc", index), ("dram", phys),
        ("abort", 0)."""
        pt = _page_table(self.lp)
        inside = self.base <= la < self.base + self.size
        if access == _FETCH and not inside:
            return gp0()  # instruction fetch outside ELRANGE in enclave mode
        phys = _walk(pt, la, access)
        if isinstance(phys, Fault):
            return phys
        idx = self.m.epc.index_of(phys)
        if not inside:
            # Outside ELRANGE: ordinary memory; EPC there is the abort page.
            return ("abort", 0) if idx is not None else ("dram", phys & _PAGE_MASK)
        if idx is None:
            return _sgx_pf(la, access)
        e = self.m.epc.epcm
        need = _PERM_BIT[access]
        if (
            not e.valid[idx]
            or e.blocked[idx]
            or e.pt[idx] != PageType.PT_REG
            or int(e.secs[idx]) != self.secs_index
            or int(e.linaddr[idx]) != la & _PAGE_MASK
            or e.pending[idx]
            or e.modified[idx]
            or not int(e.rwx[idx]) & need
        ):
            return _sgx_pf(la, access)
        return ("epc", idx)

    def _resolve(self, addr: int, n: int, access: int) -> list[tuple[tuple[str, int], int, int]]:
        """Check every page of ``[addr, addr+n)`` (AEX + retry on a fault), then return them."""
        addr = _u64("address", addr)
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise InvalidArgument(f"access length must be a non-negative int, got {n!r}")
        self._check_current()
        while True:
            self._step()
            out: list[tuple[tuple[str, int], int, int]] = []
            fault: Fault | None = None
            if n and (not _canonical(addr) or not _canonical((addr + n - 1) & _U64) or addr + n > _U64 + 1):
                fault = gp0()
            a, end = addr, addr + n
            while fault is None and a < end:
                chunk = min(end, (a & _PAGE_MASK) + PAGE_SIZE) - a
                where = self._data_page(a, access)
                if isinstance(where, Fault):
                    fault = where
                    break
                out.append((where, a & (PAGE_SIZE - 1), chunk))
                a += chunk
            if fault is None:
                return out
            self._deliver(fault)

    def _load(self, addr: int, n: int, access: int) -> bytes:
        parts = []
        for (kind, where), off, chunk in self._resolve(addr, n, access):
            if kind == "epc":
                parts.append(self.m.epc.read(where, off, chunk))
            elif kind == "dram":
                parts.append(self.m.dram.read(where + off, chunk))
            else:
                parts.append(b"\xff" * chunk)
        return b"".join(parts)

    # -- data accesses ------------------------------------------------------------------------

    def read(self, addr: int, n: int) -> bytes:
        """Read ``n`` bytes at linear address ``addr`` (a data read in enclave mode)."""
        return self._load(addr, n, _READ)

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` at linear address ``addr``: every page is checked before any byte is stored."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidArgument(f"write data must be bytes, got {type(data).__name__}")
        raw = bytes(data)
        pos = 0
        for (kind, where), off, chunk in self._resolve(addr, len(raw), _WRITE):
            piece = raw[pos : pos + chunk]
            if kind == "epc":
                self.m.epc.write(where, off, piece)
            elif kind == "dram":
                self.m.dram.write(where + off, piece)
            pos += chunk

    def read_u64(self, addr: int) -> int:
        """Read a little-endian u64."""
        return int.from_bytes(self.read(addr, 8), "little")

    def write_u64(self, addr: int, value: int) -> None:
        """Write a little-endian u64."""
        self.write(addr, _u64("value", value).to_bytes(8, "little"))

    def trap(self, vector: int, error_code: int = 0) -> None:
        """Raise exception ``vector`` at the current instruction (UD2, INT3, ...): an AEX.

        Returns after ERESUME (as if the handler skipped the instruction).
        """
        try:
            Vector(vector)
        except ValueError:
            raise InvalidArgument(f"trap vector must be a Vector, got {vector!r}") from None
        self._check_current()
        self._step()
        self._deliver(Fault(int(vector), error_code, 0))

    # -- program loading ----------------------------------------------------------------------

    def _load_program(self, rip: int) -> Callable[[EnclaveContext], object]:
        """Fetch and compile the program image at ``rip``; #UD (AEX, retried) for a bad image."""
        while True:
            header = self._load(rip, PROGRAM_HEADER_SIZE, _FETCH)
            fn: Callable[[EnclaveContext], object] | None = None
            if header[: len(PROGRAM_MAGIC)] == PROGRAM_MAGIC:
                (length,) = struct.unpack_from("<I", header, len(PROGRAM_MAGIC))
                src = self._load((rip + PROGRAM_HEADER_SIZE) & _U64, length, _FETCH)
                code = _compile(self.m, src)
                if code is not None:
                    namespace: dict[str, Any] = {"__name__": "enclave", "__builtins__": builtins}
                    exec(code, namespace)
                    entry = namespace.get("enclave_entry")
                    if callable(entry):
                        fn = entry
            if fn is not None:
                return fn
            self._deliver(Fault(Vector.UD))

    # -- ENCLU leaves in enclave mode ---------------------------------------------------------

    def eexit(self, target_rip: int, **gprs: int) -> NoReturn:
        """ENCLU[EEXIT] to ``target_rip`` with the given GPRs (rdx, rsi, rdi, r8..r15) set first.

        Models: SDM EEXIT (RIP := RBX, RCX := AEP, TCS.STATE := INACTIVE, leave enclave mode;
        GPRs are not cleared). A non-canonical target is #GP(0) (AEX). Never returns.
        """
        target = _u64("EEXIT target", target_rip)
        for name, value in gprs.items():
            if name not in _EEXIT_GPRS:
                raise InvalidArgument(f"eexit: {name!r} is not a settable GPR ({sorted(_EEXIT_GPRS)})")
            setattr(self, name, _u64(name, value))
        self._until_ok(lambda: None if _canonical(target) else gp0())
        m, lp = self.m, self.lp
        self.rax, self.rbx, self.rcx = int(EncluLeaf.EEXIT), target, self.aep
        _set_tcs_state(m, self.tcs_index, TCS_STATE_INACTIVE)
        _leave_enclave(m, lp)
        _count(m, lp, "EEXIT")
        m.clock.charge(lp.id, m.config.latency.enclu.get(EncluLeaf.EEXIT, 0))
        self._exit_event = EnclaveExit(
            int(EncluLeaf.EEXIT),
            self.rax,
            target,
            self.aep,
            rdx=self.rdx & _U64,
            rsi=self.rsi & _U64,
            rdi=self.rdi & _U64,
            r8=self.r8 & _U64,
            r9=self.r9 & _U64,
            target=target,
        )
        raise _EExit(self._exit_event)

    def ereport(self, targetinfo_addr: int, reportdata_addr: int, out_addr: int) -> None:
        """ENCLU[EREPORT]: write a REPORT of this enclave MACed for the TARGETINFO's enclave.

        Models: SDM EREPORT. Outcomes: success (432 bytes at ``out_addr``); #GP(0) for
        misalignment, an operand outside ELRANGE or non-zero TARGETINFO reserved fields; #PF for
        operand pages that are not readable (writable for the output) PT_REG pages of this enclave.
        """
        ti_la = _u64("TARGETINFO address", targetinfo_addr)
        rd_la = _u64("REPORTDATA address", reportdata_addr)
        out_la = _u64("OUTPUTDATA address", out_addr)
        self._until_ok(lambda: _ereport(self, ti_la, rd_la, out_la))
        _leaf_done(self, EncluLeaf.EREPORT)

    def egetkey(self, keyrequest_addr: int, out_addr: int) -> int:
        """ENCLU[EGETKEY]: derive the KEYREQUEST's key into 16 bytes at ``out_addr``; RAX.

        Models: SDM EGETKEY. Outcomes: SUCCESS, SGX_INVALID_ATTRIBUTE, SGX_INVALID_CPUSVN,
        SGX_INVALID_ISVSVN, SGX_INVALID_KEYNAME; #GP(0) (alignment, ELRANGE, reserved fields or
        policy bits, KSS-only policy/CONFIGSVN without KSS); #PF for bad operand pages.
        """
        kr_la = _u64("KEYREQUEST address", keyrequest_addr)
        out_la = _u64("OUTPUTDATA address", out_addr)
        status: SgxStatus = self._until_ok(lambda: _egetkey(self, kr_la, out_la))
        _leaf_done(self, EncluLeaf.EGETKEY)
        return int(status)

    def eaccept(self, secinfo_addr: int, page_addr: int) -> int:
        """ENCLU[EACCEPT]: accept an EAUG/EMODPR/EMODT change to the page at ``page_addr``; RAX.

        Models: SDM EACCEPT. Outcomes: SUCCESS, SGX_PAGE_ATTRIBUTES_MISMATCH, SGX_NOT_TRACKED;
        #GP(0) (alignment, ELRANGE, SECINFO reserved or illegal combination, insane TCS); #PF
        (ordinary for an unmapped target, e.g. an ELRANGE hole Linux then EAUGs; SGX for EPCM
        violations).
        """
        si_la = _u64("SECINFO address", secinfo_addr)
        pg_la = _u64("page address", page_addr)
        status: SgxStatus = self._until_ok(lambda: _eaccept(self, si_la, pg_la))
        _leaf_done(self, EncluLeaf.EACCEPT)
        return int(status)

    def eacceptcopy(self, secinfo_addr: int, dst: int, src: int) -> int:
        """ENCLU[EACCEPTCOPY]: fill the PENDING page ``dst`` from ``src`` and accept it; RAX.

        Models: SDM EACCEPTCOPY. Outcomes: SUCCESS, SGX_PAGE_ATTRIBUTES_MISMATCH; #GP(0); #PF.
        """
        si_la = _u64("SECINFO address", secinfo_addr)
        dst_la = _u64("destination address", dst)
        src_la = _u64("source address", src)
        status: SgxStatus = self._until_ok(lambda: _eacceptcopy(self, si_la, dst_la, src_la))
        _leaf_done(self, EncluLeaf.EACCEPTCOPY)
        return int(status)

    def emodpe(self, secinfo_addr: int, page_addr: int) -> None:
        """ENCLU[EMODPE]: extend the EPCM permissions of the page at ``page_addr``.

        Models: SDM EMODPE. Outcomes: success; #GP(0) (alignment, ELRANGE, SECINFO reserved,
        W without R on an unreadable page); #PF for bad SECINFO/target pages. No error codes.
        """
        si_la = _u64("SECINFO address", secinfo_addr)
        pg_la = _u64("page address", page_addr)
        self._until_ok(lambda: _emodpe(self, si_la, pg_la))
        _leaf_done(self, EncluLeaf.EMODPE)


_RESUME = object()  # what ERESUME sends into a suspended enclave thread


def _compile(m: Machine, src: bytes) -> CodeType | None:
    """Compile a program's source once per SHA-256; None for source that is not a program."""
    key = hashlib.sha256(src).digest()
    cache = m.enclave_code_cache
    if key in cache:
        return cache[key]
    code: CodeType | None
    try:
        code = compile(src.decode("utf-8"), "<enclave>", "exec")
    except (SyntaxError, ValueError, UnicodeDecodeError):
        code = None
    cache[key] = code
    return code


def _count(m: Machine, lp: LogicalProcessor, name: str) -> None:
    m.stats[name] = m.stats.get(name, 0) + 1
    lp.stats[name] = lp.stats.get(name, 0) + 1


def _leaf_done(ctx: EnclaveContext, leaf: EncluLeaf) -> None:
    _count(ctx.m, ctx.lp, leaf.name)
    ctx.m.clock.charge(ctx.lp.id, ctx.m.config.latency.enclu.get(leaf, 0))


def _sgx2(ctx: EnclaveContext) -> Fault | None:
    """SGX2 leaves on an SGX1 part: an unsupported ENCLU leaf, #GP(0)."""
    return None if ctx.m.config.sgx2 else gp0()


def _set_tcs_state(m: Machine, tcs_index: int, value: int) -> None:
    m.epc.write(tcs_index, _TCS_STATE_OFF, struct.pack("<Q", value))


def _tcs_cssa(m: Machine, tcs_index: int) -> int:
    return int(struct.unpack("<I", m.epc.read(tcs_index, _TCS_CSSA_OFF, 4))[0])


def _in_elrange(ctx: EnclaveContext, la: int) -> bool:
    return ctx.base <= la < ctx.base + ctx.size


# ---------------------------------------------------------------------------------------
# AEX


def _aex(ctx: EnclaveContext, fault: Fault | None) -> EnclaveExit:
    """Asynchronous enclave exit: save state to SSA[CSSA], CSSA += 1, leave enclave mode.

    Models: SDM Vol. 3D ch. 40 (asynchronous enclave exit): GPRs (+EXITINFO; MISC.EXINFO when selected) to
    the current SSA frame, CSSA incremented, TCS inactive, synthetic state (RAX=3 ERESUME,
    RBX=TCS, RCX=AEP, RDX/RSI/RDI/R8-R15 = 0), CR2's low 12 bits cleared for a #PF.
    Also stores the calling greenlet in the TCS's continuation stack.
    """
    m, lp, state = ctx.m, ctx.lp, ctx.state
    gpr_idx, gpr_off = ctx._gpr_loc
    old = SsaGpr.unpack(m.epc.read(gpr_idx, gpr_off, SGX_SSA_GPRS_SIZE))
    exitinfo = 0
    if fault is not None:
        exinfo = bool(state.miscselect & MISC_EXINFO)
        if fault.vector in _EXITINFO_ALWAYS or (fault.vector in (Vector.PF, Vector.GP) and exinfo):
            kind = SSA_EXIT_TYPE_SOFTWARE if fault.vector == Vector.BP else SSA_EXIT_TYPE_HARDWARE
            exitinfo = ssa_exitinfo(fault.vector, kind)
        if exinfo and fault.vector in (Vector.PF, Vector.GP):
            misc = struct.pack("<QII", fault.addr & _U64, fault.error_code & 0xFFFF_FFFF, 0)
            m.epc.write(gpr_idx, gpr_off - SGX_SSA_MISC_EXINFO_SIZE, misc)
    regs = ctx._regs()
    saved = SsaGpr(
        **regs,
        rflags=ctx.rflags & _U64,
        rip=ctx.rip & _U64,
        ursp=old.ursp,
        urbp=old.urbp,
        exitinfo=exitinfo,
        reserved=old.reserved,
        fsbase=ctx.fsbase,
        gsbase=ctx.gsbase,
    )
    m.epc.write(gpr_idx, gpr_off, saved.pack())
    frame = _tcs_cssa(m, ctx.tcs_index)
    m.epc.write(ctx.tcs_index, _TCS_CSSA_OFF, struct.pack("<I", (frame + 1) & 0xFFFF_FFFF))
    _set_tcs_state(m, ctx.tcs_index, TCS_STATE_INACTIVE)
    _leave_enclave(m, lp)
    rec = _thread_record(m, ctx.tcs_index, state.eid, ctx.tcs)
    rec.frames[frame] = _Frame(ctx._glet, ctx)
    _count(m, lp, "AEX")
    m.clock.charge(lp.id, m.config.latency.aex)
    host_fault = None
    if fault is not None:
        addr = fault.addr & _PAGE_MASK if fault.vector == Vector.PF else fault.addr
        host_fault = Fault(fault.vector, fault.error_code, addr)
    return EnclaveExit(
        int(EncluLeaf.ERESUME), int(EncluLeaf.ERESUME), ctx.tcs, ctx.aep, fault=host_fault, target=ctx.aep
    )


def _enclave_thread(ctx: EnclaveContext) -> object:
    """Body of an enclave thread's greenlet: load and run the program image at ``ctx.rip``."""
    try:
        fn = ctx._load_program(ctx.rip)
        fn(ctx)
        while True:  # [MODEL] falling off the end of enclave_entry executes garbage: #UD
            ctx._deliver(Fault(Vector.UD))
    except _EExit as done:
        return done.event
    except Exception as exc:
        if ctx._dead:  # raised while being discarded: finish unwinding
            raise greenlet.GreenletExit from exc
        if ctx._exit_event is not None:  # raised while unwinding after EEXIT: EEXIT stands
            return ctx._exit_event
        return _Crash(_crash_exit(ctx), exc)


def _crash_exit(ctx: EnclaveContext) -> EnclaveExit:
    """State changes of the #UD AEX taken when enclave code raised; the thread is not kept."""
    event = _aex(ctx, Fault(Vector.UD))
    rec = ctx.m.tcs_threads.get(ctx.tcs_index)
    if isinstance(rec, _TcsThread):
        rec.frames = {k: v for k, v in rec.frames.items() if v.ctx is not ctx}
    return event


# ---------------------------------------------------------------------------------------
# EENTER / ERESUME


@dataclass(frozen=True)
class _Entry:
    tcs_index: int
    secs_index: int
    state: SecsState
    tcs: Tcs
    frame: int
    gpr_loc: tuple[int, int]
    target: int


def _entry_checks(m: Machine, lp: LogicalProcessor, rbx: int, rcx: int, resume: bool) -> _Entry | Fault:
    """EENTER/ERESUME checks in SDM order; the entry parameters or the fault.

    Models: SDM EENTER / ERESUME pseudo-code (64-bit mode, CR4.OSFXSR=1, CR4.OSXSAVE=1).
    [MODEL] The TCS is accessed as read-write (the leaf updates TCS.STATE and the AEP), so its
    page-table #PF error codes are those of a write; the SSA pages are "read/write accessible".
    """
    if rbx & (PAGE_SIZE - 1):
        return gp0()
    pt = _page_table(lp)
    tcs_index = _epc_page(m, pt, rbx, _WRITE)
    if isinstance(tcs_index, Fault):
        return tcs_index
    if not _canonical(rcx):
        return gp0()
    e = m.epc.epcm
    if not e.valid[tcs_index] or e.blocked[tcs_index]:
        return _sgx_pf(rbx, _WRITE)
    if int(e.linaddr[tcs_index]) != rbx or e.pt[tcs_index] != PageType.PT_TCS:
        return _sgx_pf(rbx, _WRITE)
    if e.pending[tcs_index] or e.modified[tcs_index]:
        return _sgx_pf(rbx, _WRITE)
    tcs = Tcs.unpack(m.epc.read(tcs_index))
    if tcs.ossa & (PAGE_SIZE - 1) or tcs.ofsbase & (PAGE_SIZE - 1) or tcs.ogsbase & (PAGE_SIZE - 1):
        return gp0()
    secs_index = int(e.secs[tcs_index])
    state = m.epc.secs_state.get(secs_index)
    if state is None:
        raise ModelInvariantError(f"valid TCS page {tcs_index} has no SECS state (SECS {secs_index})")
    if tcs.flags & _TCS_FLAGS_ENTRY_RESERVED:
        return gp0()
    if not state.initialized:
        return gp0()
    if not state.attributes & Attributes.MODE64BIT:
        return gp0()
    xcr0 = m.config.xfrm_supported | 0x3
    if state.xfrm & xcr0 != state.xfrm:
        return gp0()
    if not tcs.flags & SGX_TCS_DBGOPTIN and bool(tcs.flags & TCS_FLAGS_AEXNOTIFY) != bool(
        state.attributes & Attributes.AEXNOTIFY
    ):
        return gp0()
    if resume:
        if tcs.cssa == 0:
            return gp0()
        frame = tcs.cssa - 1
    else:
        if tcs.cssa >= tcs.nssa:
            return gp0()
        frame = tcs.cssa
    sfs = state.ssa_frame_size * PAGE_SIZE
    ssa_la = (tcs.ossa + state.base + sfs * frame) & _U64
    page = ssa_la
    while page < ssa_la + xsave_frame_size(state.xfrm):
        idx = _epc_page(m, pt, page, _WRITE)
        if isinstance(idx, Fault):
            return idx
        if not _ssa_page_ok(m, idx, page, secs_index):
            return _sgx_pf(page, _WRITE)
        page += PAGE_SIZE
    gpr_la = (ssa_la + sfs - SGX_SSA_GPRS_SIZE) & _U64
    gpr_idx = _epc_page(m, pt, gpr_la, _WRITE)
    if isinstance(gpr_idx, Fault):
        return gpr_idx
    if not _ssa_page_ok(m, gpr_idx, gpr_la, secs_index):
        return _sgx_pf(gpr_la, _WRITE)
    gpr_off = gpr_la & (PAGE_SIZE - 1)
    if resume:
        gpr = SsaGpr.unpack(m.epc.read(gpr_idx, gpr_off, SGX_SSA_GPRS_SIZE))
        target, fsbase, gsbase = gpr.rip, gpr.fsbase, gpr.gsbase
    else:
        target = (tcs.oentry + state.base) & _U64
        fsbase = (tcs.ofsbase + state.base) & _U64
        gsbase = (tcs.ogsbase + state.base) & _U64
    if not _canonical(target) or not _canonical(fsbase) or not _canonical(gsbase):
        return gp0()
    if tcs.state == TCS_STATE_ACTIVE:
        return gp0()
    return _Entry(tcs_index, secs_index, state, tcs, frame, (gpr_idx, gpr_off), target)


def execute(
    m: Machine,
    lp: LogicalProcessor,
    leaf: int,
    rbx: int = 0,
    rcx: int = 0,
    rdx: int = 0,
    *,
    rsi: int = 0,
    rdi: int = 0,
    r8: int = 0,
    r9: int = 0,
) -> EnclaveExit | Fault:
    """Execute ENCLU from outside an enclave: EENTER or ERESUME, running enclave code until it exits.

    Models: SDM ENCLU[EENTER] / ENCLU[ERESUME] (entry checks, see :func:`_entry_checks`) and the
    enclave execution that follows until EEXIT or an AEX. RDX, RSI, RDI, R8 and R9 pass through
    to the enclave at EENTER. Outcomes: :class:`EnclaveExit` (EEXIT, or AEX with the fault),
    or a :class:`~sgxsim.hw.arch.Fault` if the leaf faulted before entering (#GP(0) for the other
    leaves, which are only valid in enclave mode, for an unknown leaf, and for EENTER/ERESUME
    executed in enclave mode).
    """
    for name, value in (
        ("leaf", leaf),
        ("RBX", rbx),
        ("RCX", rcx),
        ("RDX", rdx),
        ("RSI", rsi),
        ("RDI", rdi),
        ("R8", r8),
        ("R9", r9),
    ):
        _u64(name, value)
    name = EncluLeaf(leaf).name if leaf in EncluLeaf._value2member_map_ else f"ENCLU[{leaf:#x}]"
    m.stats[name] = m.stats.get(name, 0) + 1
    if leaf not in (EncluLeaf.EENTER, EncluLeaf.ERESUME) or lp.in_enclave:
        return gp0()
    resume = leaf == EncluLeaf.ERESUME
    m.clock.charge(lp.id, m.config.latency.enclu.get(EncluLeaf(leaf), 0))
    entry = _entry_checks(m, lp, rbx, rcx, resume)
    if isinstance(entry, Fault):
        return entry
    state = entry.state
    # Enter enclave mode: CR_ACTIVE_SECS, CR_TCS_PA, TCS.STATE := ACTIVE, CR_TCS_LA.AEP := RCX.
    lp.active_secs = entry.secs_index
    lp.active_tcs = entry.tcs_index
    state.inside[lp.id] = state.epoch
    _set_tcs_state(m, entry.tcs_index, TCS_STATE_ACTIVE)
    m.epc.write(entry.tcs_index, _TCS_AEP_OFF, struct.pack("<Q", rcx))
    lp.stats[name] = lp.stats.get(name, 0) + 1
    rec = _thread_record(m, entry.tcs_index, state.eid, rbx)
    caller = greenlet.getcurrent()
    frame = rec.frames.pop(entry.frame, None) if resume else None
    if not resume:
        for stale in [k for k in rec.frames if k >= entry.frame]:
            _kill(rec.frames.pop(stale).glet)
    if frame is not None and frame.glet.dead:
        frame = None
    if frame is not None:
        # The thread may resume on another processor, and its TCS and SECS may have been paged
        # out and back into other EPC pages since it was suspended.
        ctx = frame.ctx
        ctx.lp = lp
        ctx.tcs_index = entry.tcs_index
        ctx.secs_index = entry.secs_index
        ctx.state = state
    else:
        ctx = EnclaveContext(
            m, lp, entry.secs_index, state, entry.tcs_index, rbx, entry.tcs, rcx, entry.target
        )
    ctx.aep = rcx
    ctx.frame = entry.frame
    ctx._gpr_loc = entry.gpr_loc
    ctx._caller = caller
    if resume:
        gpr = SsaGpr.unpack(m.epc.read(entry.gpr_loc[0], entry.gpr_loc[1], SGX_SSA_GPRS_SIZE))
        for reg in _GPR_NAMES:
            setattr(ctx, reg, getattr(gpr, reg))
        ctx.rflags = gpr.rflags
        ctx.rip = gpr.rip
        ctx.fsbase, ctx.gsbase = gpr.fsbase, gpr.gsbase
        m.epc.write(entry.tcs_index, _TCS_CSSA_OFF, struct.pack("<I", entry.frame))
    else:
        ctx.rax = entry.tcs.cssa
        ctx.rbx = rbx
        ctx.rcx = (rcx + ENCLU_INSN_SIZE) & _U64
        ctx.rdx, ctx.rsi, ctx.rdi, ctx.r8, ctx.r9 = rdx, rsi, rdi, r8, r9
    if frame is not None:
        frame.glet.parent = caller
        result = frame.glet.switch(_RESUME)
    else:
        glet = greenlet.greenlet(run=_enclave_thread, parent=caller)
        ctx._glet = glet
        result = glet.switch(ctx)
    if isinstance(result, EnclaveExit):
        return result
    if isinstance(result, _Crash):
        raise InvalidArgument(f"enclave program raised {result.exc!r} (AEX #UD taken)") from result.exc
    raise ModelInvariantError(f"enclave thread switched back with {result!r}")


# ---------------------------------------------------------------------------------------
# EREPORT / EGETKEY


def _ereport(ctx: EnclaveContext, ti_la: int, rd_la: int, out_la: int) -> Fault | None:
    """Body of EREPORT (see :meth:`EnclaveContext.ereport`)."""
    m, lp, state = ctx.m, ctx.lp, ctx.state
    if ti_la % 512 or not _in_elrange(ctx, ti_la):
        return gp0()
    ti_idx = _operand_page(m, lp, ti_la, _READ, 0x1)
    if isinstance(ti_idx, Fault):
        return ti_idx
    ti = Targetinfo.unpack(m.epc.read(ti_idx, ti_la & (PAGE_SIZE - 1), Targetinfo.SIZE))
    if not ti.reserved_ok():
        return gp0()
    if rd_la % 128 or not _in_elrange(ctx, rd_la):
        return gp0()
    rd_idx = _operand_page(m, lp, rd_la, _READ, 0x1)
    if isinstance(rd_idx, Fault):
        return rd_idx
    if out_la % 512 or not _in_elrange(ctx, out_la):
        return gp0()
    out_idx = _operand_page(m, lp, out_la, _WRITE, 0x2)
    if isinstance(out_idx, Fault):
        return out_idx
    cpusvn = m.cpusvn
    report = Report(
        cpusvn=cpusvn,
        miscselect=state.miscselect,
        isvextprodid=state.isv_ext_prod_id,
        attributes=state.attributes,
        xfrm=state.xfrm,
        mrenclave=state.mrenclave,
        mrsigner=state.mrsigner,
        configid=state.config_id,
        isvprodid=state.isv_prod_id,
        isvsvn=state.isv_svn,
        configsvn=state.config_svn,
        isvfamilyid=state.isv_family_id,
        reportdata=m.epc.read(rd_idx, rd_la & (PAGE_SIZE - 1), 64),
        keyid=m.cr_report_keyid,
    )
    deps = _deps(
        m,
        keyname=KeyName.REPORT,
        ownerepoch=m.owner_epoch,
        attributes=_attrs(ti.attributes, ti.xfrm),
        mrenclave=ti.measurement,
        keyid=report.keyid,
        seal_fuses=m.seal_fuses,
        cpusvn=cpusvn,
        padding=state.padding,
        miscselect=ti.miscselect,
        configid=ti.config_id,
        configsvn=ti.config_svn,
    )
    mac = aes_cmac(derive_key(m.fused_secret, deps), report.body())
    m.epc.write(out_idx, out_la & (PAGE_SIZE - 1), dataclasses.replace(report, mac=mac).pack())
    return None


def _attrs(flags: int, xfrm: int) -> bytes:
    """A 16-byte ATTRIBUTES value: flags u64 then XFRM u64, little-endian."""
    return struct.pack("<QQ", flags & _U64, xfrm & _U64)


def _deps(m: Machine, **fields: Any) -> KeyDependencies:
    """A KEYDEPENDENCIES value: the named fields, every other one zero (PADDING always named)."""
    padding = fields.get("padding", b"")
    if len(padding) != len(PKCS1_SHA256_PADDING):
        raise ModelInvariantError(f"SECS.PADDING of an initialized enclave is {len(padding)} bytes, not 352")
    return KeyDependencies(**fields)


def _egetkey(ctx: EnclaveContext, kr_la: int, out_la: int) -> Fault | SgxStatus:
    """Body of EGETKEY (see :meth:`EnclaveContext.egetkey`)."""
    m, lp, state = ctx.m, ctx.lp, ctx.state
    if kr_la % 512 or not _in_elrange(ctx, kr_la):
        return gp0()
    kr_idx = _operand_page(m, lp, kr_la, _READ, 0x1)
    if isinstance(kr_idx, Fault):
        return kr_idx
    if out_la % 16 or not _in_elrange(ctx, out_la):
        return gp0()
    out_idx = _operand_page(m, lp, out_la, _WRITE, 0x2)
    if isinstance(out_idx, Fault):
        return out_idx
    req = Keyrequest.unpack(m.epc.read(kr_idx, kr_la & (PAGE_SIZE - 1), Keyrequest.SIZE))
    if not req.reserved_ok() or req.keypolicy & KEYPOLICY_RESERVED_MASK:
        return gp0()
    kss = bool(state.attributes & Attributes.KSS)
    if not kss and (req.keypolicy & KEYPOLICY_KSS_MASK or req.configsvn > 0):
        return gp0()
    tmp_attributes = (req.attributemask | REQUIRED_SEALING_MASK) & state.attributes
    tmp_xfrm = req.xfrmmask & state.xfrm
    tmp_miscselect = req.miscmask & state.miscselect
    cur_cpusvn = m.cpusvn
    policy = req.keypolicy
    name = req.keyname

    def svn_checks(check_config: bool) -> SgxStatus | None:
        if not cpusvn_le(req.cpusvn, cur_cpusvn):
            return SgxStatus.SGX_INVALID_CPUSVN
        if req.isvsvn > state.isv_svn:
            return SgxStatus.SGX_INVALID_ISVSVN
        if check_config and req.configsvn > state.config_svn:
            return SgxStatus.SGX_INVALID_ISVSVN
        return None

    def policy_identity() -> dict[str, Any]:
        return {
            "isvfamilyid": state.isv_family_id if policy & KeyPolicy.ISVFAMILYID else bytes(16),
            "isvextprodid": state.isv_ext_prod_id if policy & KeyPolicy.ISVEXTPRODID else bytes(16),
            "isvprodid": 0 if policy & KeyPolicy.NOISVPRODID else state.isv_prod_id,
            "configid": state.config_id if policy & KeyPolicy.CONFIGID else bytes(64),
            "configsvn": req.configsvn if policy & KeyPolicy.CONFIGID else 0,
        }

    miscmask_inv = ~req.miscmask & 0xFFFF_FFFF
    if name == KeyName.SEAL:
        bad = svn_checks(check_config=True)
        if bad is not None:
            return bad
        deps = _deps(
            m,
            keyname=KeyName.SEAL,
            **policy_identity(),
            isvsvn=req.isvsvn,
            ownerepoch=m.owner_epoch,
            attributes=_attrs(tmp_attributes, tmp_xfrm),
            attributemask=_attrs(req.attributemask, req.xfrmmask),
            mrenclave=state.mrenclave if policy & KeyPolicy.MRENCLAVE else bytes(32),
            mrsigner=state.mrsigner if policy & KeyPolicy.MRSIGNER else bytes(32),
            keyid=req.keyid,
            seal_fuses=m.seal_fuses,
            cpusvn=req.cpusvn,
            padding=state.padding,
            miscselect=tmp_miscselect,
            miscmask=miscmask_inv,
            keypolicy=policy,
        )
    elif name == KeyName.REPORT:
        deps = _deps(
            m,
            keyname=KeyName.REPORT,
            ownerepoch=m.owner_epoch,
            attributes=_attrs(state.attributes, state.xfrm),
            mrenclave=state.mrenclave,
            keyid=req.keyid,
            seal_fuses=m.seal_fuses,
            cpusvn=cur_cpusvn,
            padding=HARDCODED_PKCS1_5_PADDING,
            miscselect=state.miscselect,
            configid=state.config_id,
            configsvn=state.config_svn,
        )
    elif name == KeyName.EINITTOKEN:
        if not state.attributes & Attributes.EINITTOKENKEY:
            return SgxStatus.SGX_INVALID_ATTRIBUTE
        bad = svn_checks(check_config=False)
        if bad is not None:
            return bad
        deps = _deps(
            m,
            keyname=KeyName.EINITTOKEN,
            isvprodid=state.isv_prod_id,
            isvsvn=req.isvsvn,
            ownerepoch=m.owner_epoch,
            attributes=_attrs(tmp_attributes, tmp_xfrm),
            mrsigner=state.mrsigner,
            keyid=req.keyid,
            seal_fuses=m.seal_fuses,
            cpusvn=req.cpusvn,
            padding=state.padding,
            miscselect=tmp_miscselect,
        )
    elif name == KeyName.PROVISION:
        if not state.attributes & Attributes.PROVISIONKEY:
            return SgxStatus.SGX_INVALID_ATTRIBUTE
        bad = svn_checks(check_config=False)
        if bad is not None:
            return bad
        deps = _deps(
            m,
            keyname=KeyName.PROVISION,
            isvprodid=state.isv_prod_id,
            isvsvn=req.isvsvn,
            attributes=_attrs(tmp_attributes, tmp_xfrm),
            attributemask=_attrs(req.attributemask, req.xfrmmask),
            mrsigner=state.mrsigner,
            cpusvn=req.cpusvn,
            padding=state.padding,
            miscselect=tmp_miscselect,
            miscmask=miscmask_inv,
        )
    elif name == KeyName.PROVISION_SEAL:
        if not state.attributes & Attributes.PROVISIONKEY:
            return SgxStatus.SGX_INVALID_ATTRIBUTE
        bad = svn_checks(check_config=False)
        if bad is not None:
            return bad
        ident = policy_identity()
        deps = _deps(
            m,
            keyname=KeyName.PROVISION_SEAL,
            **ident,
            isvsvn=req.isvsvn,
            attributes=_attrs(tmp_attributes, tmp_xfrm),
            attributemask=_attrs(req.attributemask, req.xfrmmask),
            mrsigner=state.mrsigner,
            seal_fuses=m.seal_fuses,
            cpusvn=req.cpusvn,
            padding=state.padding,
            miscselect=tmp_miscselect,
            miscmask=miscmask_inv,
            keypolicy=policy,
        )
    else:
        return SgxStatus.SGX_INVALID_KEYNAME
    m.epc.write(out_idx, out_la & (PAGE_SIZE - 1), derive_key(m.fused_secret, deps))
    return SgxStatus.SUCCESS


# ---------------------------------------------------------------------------------------
# SGX2: EACCEPT, EACCEPTCOPY, EMODPE


def _secinfo_operand(ctx: EnclaveContext, si_la: int) -> Secinfo | Fault:
    """Read a 64-byte-aligned SECINFO from a readable PT_REG page of this enclave."""
    if si_la % 64 or not _in_elrange(ctx, si_la):
        return gp0()
    idx = _operand_page(ctx.m, ctx.lp, si_la, _READ, 0x1)
    if isinstance(idx, Fault):
        return idx
    return Secinfo.unpack(ctx.m.epc.read(idx, si_la & (PAGE_SIZE - 1), Secinfo.SIZE))


def _eaccept(ctx: EnclaveContext, si_la: int, pg_la: int) -> Fault | SgxStatus:
    """Body of EACCEPT (see :meth:`EnclaveContext.eaccept`). Models: SDM EACCEPT pseudo-code."""
    bad = _sgx2(ctx)
    if bad is not None:
        return bad
    m, lp = ctx.m, ctx.lp
    si = _secinfo_operand(ctx, si_la)
    if isinstance(si, Fault):
        return si
    if not si.reserved_ok():
        return gp0()
    if pg_la & (PAGE_SIZE - 1) or not _in_elrange(ctx, pg_la):
        return gp0()
    idx = _epc_page(m, _page_table(lp), pg_la, _READ)
    if isinstance(idx, Fault):
        return idx
    pt = secinfo_page_type(si.flags)
    pending = bool(si.flags & SecinfoFlags.PENDING)
    modified = bool(si.flags & SecinfoFlags.MODIFIED)
    pr = bool(si.flags & SecinfoFlags.PR)
    legal = (
        (pt == PageType.PT_REG and (pr or pending) and not modified)
        or (pt in (PageType.PT_TCS, PageType.PT_TRIM) and not pending and modified and not pr)
        or (pt in (PageType.PT_SS_FIRST, PageType.PT_SS_REST) and pending and not modified and not pr)
    )
    if not legal:
        return gp0()
    e = m.epc.epcm
    if (
        not e.valid[idx]
        or e.blocked[idx]
        or int(e.pt[idx])
        not in (PageType.PT_REG, PageType.PT_TCS, PageType.PT_TRIM, PageType.PT_SS_FIRST, PageType.PT_SS_REST)
        or int(e.secs[idx]) != lp.active_secs
    ):
        return _sgx_pf(pg_la, _READ)
    rwx = int(e.rwx[idx])
    if (
        int(e.linaddr[idx]) != pg_la
        or bool(e.pending[idx]) != pending
        or bool(e.modified[idx]) != modified
        or rwx != si.flags & 0x7
        or int(e.pt[idx]) != pt
    ):
        return SgxStatus.SGX_PAGE_ATTRIBUTES_MISMATCH
    if (e.modified[idx] or e.pr[idx]) and not _tracking_done(ctx.state, int(e.block_epoch[idx])):
        return SgxStatus.SGX_NOT_TRACKED
    if pt == PageType.PT_TCS:
        tcs = Tcs.unpack(m.epc.read(idx))
        if (
            not tcs.reserved_ok()
            or tcs.flags & SGX_TCS_DBGOPTIN
            or tcs.cssa >= tcs.nssa
            or tcs.aep != 0
            or tcs.state != 0
        ):
            return gp0()
    e.pending[idx] = False
    e.modified[idx] = False
    e.pr[idx] = False
    return SgxStatus.SUCCESS


def _eacceptcopy(ctx: EnclaveContext, si_la: int, dst_la: int, src_la: int) -> Fault | SgxStatus:
    """Body of EACCEPTCOPY. Models: SDM EACCEPTCOPY pseudo-code."""
    bad = _sgx2(ctx)
    if bad is not None:
        return bad
    m, lp = ctx.m, ctx.lp
    if si_la % 64:
        return gp0()
    if dst_la & (PAGE_SIZE - 1) or src_la & (PAGE_SIZE - 1):
        return gp0()
    if not (_in_elrange(ctx, si_la) and _in_elrange(ctx, dst_la) and _in_elrange(ctx, src_la)):
        return gp0()
    pt = _page_table(lp)
    si_idx = _epc_page(m, pt, si_la, _READ)
    if isinstance(si_idx, Fault):
        return si_idx
    dst = _epc_page(m, pt, dst_la, _WRITE)
    if isinstance(dst, Fault):
        return dst
    src = _epc_page(m, pt, src_la, _READ)
    if isinstance(src, Fault):
        return src
    si_page = _operand_page(m, lp, si_la, _READ, 0x1)
    if isinstance(si_page, Fault):
        return si_page
    si = Secinfo.unpack(m.epc.read(si_idx, si_la & (PAGE_SIZE - 1), Secinfo.SIZE))
    perms = si.flags & 0x7
    if not si.reserved_ok() or (not perms & 0x1 and perms & 0x2) or si.page_type != PageType.PT_REG:
        return gp0()
    if _operand_page(m, lp, src_la, _READ, 0x1) != src:
        return _sgx_pf(src_la, _READ)
    e = m.epc.epcm
    if (
        not e.valid[dst]
        or not e.pending[dst]
        or e.modified[dst]
        or e.blocked[dst]
        or e.pt[dst] != PageType.PT_REG
        or int(e.secs[dst]) != lp.active_secs
        or int(e.rwx[dst]) != 0x3
        or int(e.linaddr[dst]) != dst_la
    ):
        return SgxStatus.SGX_PAGE_ATTRIBUTES_MISMATCH
    m.epc.set_page(dst, m.epc.read(src))
    e.rwx[dst] = perms
    e.pending[dst] = False
    return SgxStatus.SUCCESS


def _emodpe(ctx: EnclaveContext, si_la: int, pg_la: int) -> Fault | None:
    """Body of EMODPE. Models: SDM EMODPE pseudo-code."""
    bad = _sgx2(ctx)
    if bad is not None:
        return bad
    m, lp = ctx.m, ctx.lp
    if si_la % 64 or pg_la & (PAGE_SIZE - 1):
        return gp0()
    if not (_in_elrange(ctx, si_la) and _in_elrange(ctx, pg_la)):
        return gp0()
    pt = _page_table(lp)
    si_idx = _epc_page(m, pt, si_la, _READ)
    if isinstance(si_idx, Fault):
        return si_idx
    idx = _epc_page(m, pt, pg_la, _READ)
    if isinstance(idx, Fault):
        return idx
    si_page = _operand_page(m, lp, si_la, _READ, 0x1)
    if isinstance(si_page, Fault):
        return si_page
    si = Secinfo.unpack(m.epc.read(si_idx, si_la & (PAGE_SIZE - 1), Secinfo.SIZE))
    if not si.reserved_ok():
        return gp0()
    e = m.epc.epcm
    if (
        not e.valid[idx]
        or e.pending[idx]
        or e.modified[idx]
        or e.blocked[idx]
        or e.pt[idx] != PageType.PT_REG
        or int(e.secs[idx]) != lp.active_secs
        or int(e.linaddr[idx]) != pg_la
    ):
        return _sgx_pf(pg_la, _READ)
    rwx = int(e.rwx[idx])
    if not rwx & 0x1 and not si.flags & 0x1 and si.flags & 0x2:
        return gp0()
    e.rwx[idx] = rwx | (si.flags & 0x7)
    return None

"""The logical processor in enclave mode: registers, memory accesses, program loading, the
in-enclave ENCLU leaves as methods (their bodies live in :mod:`.keys` and :mod:`.sgx2`), and EEXIT.
"""

from __future__ import annotations

import builtins
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

import greenlet

from sgxsim.errors import InvalidArgument, ModelInvariantError
from sgxsim.hw.arch import (
    PAGE_SIZE,
    SGX_SSA_GPRS_SIZE,
    EncluLeaf,
    Fault,
    PageType,
    SgxStatus,
    SsaGpr,
    Tcs,
    Vector,
    canonical,
    gp0,
)
from sgxsim.hw.enclu.access import _FETCH, _PERM_BIT, _READ, _WRITE, _page_table, _sgx_pf, _walk
from sgxsim.hw.enclu.aex import _aex, _edeccssa, _EExit
from sgxsim.hw.enclu.common import (
    _GPR_NAMES,
    _PAGE_MASK,
    _RESUME,
    _U64,
    TCS_STATE_INACTIVE,
    EnclaveExit,
    _count,
    _leave_enclave,
    _set_tcs_state,
    _u64,
)
from sgxsim.hw.enclu.keys import _egetkey, _ereport
from sgxsim.hw.enclu.program import PROGRAM_HEADER_SIZE, PROGRAM_MAGIC, _compile
from sgxsim.hw.enclu.sgx2 import _eaccept, _eacceptcopy, _emodpe

if TYPE_CHECKING:
    from sgxsim.hw.cpu import LogicalProcessor
    from sgxsim.hw.epc import SecsState
    from sgxsim.hw.machine import Machine

__all__ = [
    "EnclaveContext",
]


_RFLAGS_DEFAULT = 0x202  # IF and the always-one bit 1
_EEXIT_GPRS = frozenset(_GPR_NAMES) - {"rax", "rbx", "rcx"}


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
            if n and (not canonical(addr) or not canonical((addr + n - 1) & _U64) or addr + n > _U64 + 1):
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
                    for part in code:
                        exec(part, namespace)
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
        self._until_ok(lambda: None if canonical(target) else gp0())
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

    def edeccssa(self) -> None:
        """ENCLU[EDECCSSA]: make the previous SSA frame current (TCS.CSSA -= 1) without leaving.

        Models: Intel ISE "Asynchronous Enclave Exit Notify and the EDECCSSA User Leaf Function"
        (ENCLU leaf 9, enumerated by CPUID.(12H,0).EAX[11]). Outcomes: success (the next AEX saves
        into the frame that became current); #GP(0) if TCS.CSSA is 0 or the leaf is not supported;
        #PF if a page of the new current SSA frame is not a valid RW PT_REG page of the enclave
        (the same checks as EENTER's). Like the hardware, it restores no register from that frame.
        """
        self._until_ok(lambda: _edeccssa(self))
        _leaf_done(self, EncluLeaf.EDECCSSA)

    def emodpe(self, secinfo_addr: int, page_addr: int) -> None:
        """ENCLU[EMODPE]: extend the EPCM permissions of the page at ``page_addr``.

        Models: SDM EMODPE. Outcomes: success; #GP(0) (alignment, ELRANGE, SECINFO reserved,
        W without R on an unreadable page); #PF for bad SECINFO/target pages. No error codes.
        """
        si_la = _u64("SECINFO address", secinfo_addr)
        pg_la = _u64("page address", page_addr)
        self._until_ok(lambda: _emodpe(self, si_la, pg_la))
        _leaf_done(self, EncluLeaf.EMODPE)


def _leaf_done(ctx: EnclaveContext, leaf: EncluLeaf) -> None:
    _count(ctx.m, ctx.lp, leaf.name)
    ctx.m.clock.charge(ctx.lp.id, ctx.m.config.latency.enclu.get(leaf, 0))

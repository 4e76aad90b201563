"""ENCLU: the user-mode SGX leaves, asynchronous enclave exits (AEX) and the enclave execution engine.

This package is the public face; the parts live apart: :mod:`.entry` (EENTER/ERESUME from outside),
:mod:`.context` (the processor in enclave mode, EEXIT), :mod:`.aex` (AEX and suspended threads),
:mod:`.keys` (EREPORT, EGETKEY), :mod:`.sgx2` (EACCEPT, EACCEPTCOPY, EMODPE), :mod:`.access` (address
translation and EPCM checks), :mod:`.program` (the [MODEL] program image), :mod:`.common`.

Models: Intel SDM Vol. 3D ch. 38 (ENCLU leaf pseudo-code: EENTER, ERESUME, EEXIT, EREPORT,
EGETKEY, EACCEPT, EACCEPTCOPY, EMODPE), ch. 36-37 (enclave access control, EPCM checks) and ch.
40 (AEX); Linux ``arch/x86/entry/vdso/vsgx.S`` (the vDSO entry).

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

**AEX-Notify.** When TCS.FLAGS.AEXNOTIFY is set and the enclave set SSA[CSSA-1].GPRSGX.AEXNOTIFY
(bit 0 of GPRSGX byte 167), ERESUME does not resume: it delivers the notification by entering as
EENTER would (frame CSSA, RIP = OENTRY, RAX = CSSA); the interrupted continuation stays suspended.
``EnclaveContext.edeccssa`` (ENCLU[EDECCSSA]) makes frame CSSA-1 current again without leaving;
like the hardware it restores nothing, and a later AEX into that frame discards the old
continuation.

Differs: RSP/RBP, FS/GS, XSAVE state, debug and performance-monitoring effects are not modelled
(SSA.U_RSP/U_RBP are not written); RIP is the address of the running program image; an
exception handler that edits SSA.RIP does not redirect a suspended continuation (a frame without
continuation, e.g. after kexec, restarts the program image at SSA.RIP); the processor is in
64-bit mode with CR4.OSXSAVE=1 and XCR0 = every supported XFRM bit. A Python exception escaping
enclave code is a bug in the model input: the processor takes an AEX with #UD (keeping the
machine consistent) and ``execute`` raises :class:`~sgxsim.errors.InvalidArgument` chained to it.
"""

from __future__ import annotations

from sgxsim.hw.enclu.aex import drop_tcs_threads
from sgxsim.hw.enclu.common import TCS_STATE_ACTIVE, TCS_STATE_INACTIVE, EnclaveExit
from sgxsim.hw.enclu.context import EnclaveContext
from sgxsim.hw.enclu.entry import ENCLU_INSN_SIZE, TCS_FLAGS_AEXNOTIFY, execute, xsave_frame_size
from sgxsim.hw.enclu.keys import HARDCODED_PKCS1_5_PADDING, REQUIRED_SEALING_MASK
from sgxsim.hw.enclu.program import PROGRAM_HEADER_SIZE, PROGRAM_MAGIC, program_image

__all__ = [
    "ENCLU_INSN_SIZE",
    "HARDCODED_PKCS1_5_PADDING",
    "PROGRAM_HEADER_SIZE",
    "PROGRAM_MAGIC",
    "REQUIRED_SEALING_MASK",
    "TCS_FLAGS_AEXNOTIFY",
    "TCS_STATE_ACTIVE",
    "TCS_STATE_INACTIVE",
    "EnclaveContext",
    "EnclaveExit",
    "drop_tcs_threads",
    "execute",
    "program_image",
    "xsave_frame_size",
]

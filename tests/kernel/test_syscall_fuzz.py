"""A seeded random-syscall test: processes, enclave and vEPC fds, garbage ioctls, mmaps, faults,
enclave entries, signals, exits and SVN updates under each policy.

After every step: no unexpected exception type escapes (OSError, a fault signal and a
:class:`FaultLoop` are what a C program can see; nothing else), the kernel's EPC records agree
with the EPCM (:func:`validate_epc`), and no WARN fired (no path here WARNs in Linux). When the
machine is torn down every process exits and all EPC and DRAM come back. The CI budget runs a
few hundred steps; ``-m slow`` runs over 100,000.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from tests.kernel.kernel_helpers import (
    OP_GET,
    OP_NOP,
    OP_PUT,
    LoadedEnclave,
    Op,
    build_enclave,
    small_machine,
)

from sgxsim.hw.arch import PAGE_SIZE
from sgxsim.hw.cpu import MicrocodePatch
from sgxsim.kernel import FaultLoop, Kernel, Process, ProcessSignal, SvnConfig, SvnPolicy
from sgxsim.kernel import uapi as U  # noqa: N812
from sgxsim.kernel.main import validate_epc

MAX_PROCS = 4
#: An address a C program could pass: small, page-aligned or not, negative, beyond TASK_SIZE.
WILD_ADDRS = st.sampled_from(
    [0, 1, PAGE_SIZE, 0x10000, 0x7F00_0000_0000, -4096, -1, 1 << 47, (1 << 64) - 4096]
)
LENGTHS = st.sampled_from([0, 1, PAGE_SIZE, 2 * PAGE_SIZE, 5 * PAGE_SIZE, -4096, -1, 1 << 40])
OFFSETS = st.sampled_from([0, PAGE_SIZE, 3 * PAGE_SIZE, -4096, 123, 1 << 63])
PROTS = st.sampled_from([0, 1, 2, 3, 4, 5, 7, 8, 0x10, 0x0100_0003, -1])
MAP_FLAGS = st.sampled_from(
    [
        U.MAP_SHARED,
        U.MAP_PRIVATE,
        U.MAP_SHARED_VALIDATE,
        U.MAP_SHARED | U.MAP_FIXED,
        U.MAP_SHARED | U.MAP_FIXED_NOREPLACE,
        U.MAP_PRIVATE | U.MAP_ANONYMOUS,
        U.MAP_SHARED | U.MAP_ANONYMOUS,
        U.MAP_PRIVATE | U.MAP_ANONYMOUS | U.MAP_FIXED,
        U.MAP_PRIVATE | U.MAP_ANONYMOUS | U.MAP_POPULATE,
        U.MAP_SHARED | U.MAP_POPULATE,
        0,
        0xF,
    ]
)
IOCTLS = st.sampled_from(
    [
        U.SGX_IOC_ENCLAVE_CREATE,
        U.SGX_IOC_ENCLAVE_ADD_PAGES,
        U.SGX_IOC_ENCLAVE_INIT,
        U.SGX_IOC_ENCLAVE_PROVISION,
        U.SGX_IOC_VEPC_REMOVE_ALL,
        U.SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS,
        U.SGX_IOC_ENCLAVE_MODIFY_TYPES,
        U.SGX_IOC_ENCLAVE_REMOVE_PAGES,
        0,
        0xDEAD_BEEF,
        -1,
    ]
)
U64 = st.one_of(st.sampled_from([0, 1, PAGE_SIZE, 1 << 63, (1 << 64) - 1]), st.integers(0, (1 << 64) - 1))
STRUCTS = [
    U.sgx_enclave_create,
    U.sgx_enclave_add_pages,
    U.sgx_enclave_init,
    U.sgx_enclave_provision,
    U.sgx_enclave_restrict_permissions,
    U.sgx_enclave_modify_types,
    U.sgx_enclave_remove_pages,
]
#: What a process can observe from a syscall or a user access.
EXPECTED = (OSError, ProcessSignal, FaultLoop)


class KernelFuzz(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.k: Kernel | None = None
        self.procs: list[Process] = []
        self.encls: dict[int, list[LoadedEnclave]] = {}
        self.mapped: dict[int, list[int]] = {}
        self.outcomes: dict[str, int] = {}

    # -- setup -------------------------------------------------------------------------

    @initialize(policy=st.sampled_from(list(SvnPolicy)), pages=st.sampled_from([64, 128]), vepc=st.booleans())
    def boot(self, policy: SvnPolicy, pages: int, vepc: bool) -> None:
        self.k = Kernel(small_machine(pages), svn=SvnConfig(policy=policy, vepc="zap" if vepc else "skip"))
        self.free0 = self.k.sgx_nr_free_pages.read()
        self.dram0 = self.k.dram_pages
        self.procs.append(self.k.create_process("p0"))

    @property
    def kernel(self) -> Kernel:
        assert self.k is not None
        return self.k

    def _proc(self, i: int) -> Process | None:
        live = [p for p in self.procs if not p.exited]
        return live[i % len(live)] if live else None

    def _do(self, what: str, fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            ret = fn(*args, **kw)
        except EXPECTED as exc:
            name = f"{what}:{type(exc).__name__}"
            if isinstance(exc, OSError):
                name += f":{exc.errno}"
            self.outcomes[name] = self.outcomes.get(name, 0) + 1
            return None
        self.outcomes[what] = self.outcomes.get(what, 0) + 1
        return ret

    def _fd(self, p: Process, j: int) -> int:
        """Mostly an open fd; sometimes a closed or never-opened one."""
        fds = sorted(p.fds)
        return fds[j % len(fds)] if fds and j < 8 else (-1, 99)[j % 2]

    def _addrs(self, p: Process) -> list[int]:
        return self.mapped.get(p.pid, []) + [e.base for e in self.encls.get(p.pid, [])]

    # -- processes -----------------------------------------------------------------------

    @precondition(lambda self: sum(not p.exited for p in self.procs) < MAX_PROCS)
    @rule(cpu=st.integers(0, 3))
    def spawn(self, cpu: int) -> None:
        self.procs.append(self.kernel.create_process(f"p{len(self.procs)}", cpu=cpu))

    @rule(i=st.integers(0, 7), code=st.integers(-1, 300))
    def exit(self, i: int, code: int) -> None:
        p = self._proc(i)
        if p is not None:
            p.exit(code)

    @rule(i=st.integers(0, 7), signo=st.sampled_from([0, U.SIGSEGV, U.SIGBUS, 9, 64, 65, -1]))
    def kill(self, i: int, signo: int) -> None:
        p = self._proc(i)
        if p is not None:
            self._do("kill", p.kill, signo)

    # -- files and ioctls ---------------------------------------------------------------

    @rule(
        i=st.integers(0, 7),
        path=st.sampled_from(
            ["/dev/sgx_enclave", "/dev/sgx_vepc", "/dev/sgx_provision", "/dev/shm/f", "/dev/nope"]
        ),
        flags=st.sampled_from([U.O_RDWR, U.O_RDONLY, U.O_WRONLY, U.O_RDWR | os.O_CREAT]),
    )
    def open(self, i: int, path: str, flags: int) -> None:
        p = self._proc(i)
        if p is not None:
            self._do("open", p.open, path, flags)

    @rule(i=st.integers(0, 7), j=st.integers(0, 9))
    def close(self, i: int, j: int) -> None:
        p = self._proc(i)
        if p is not None:
            self._do("close", p.close, self._fd(p, j))

    @rule(i=st.integers(0, 7), init=st.booleans(), heap=st.integers(0, 3))
    def build(self, i: int, init: bool, heap: int) -> None:
        p = self._proc(i)
        if p is None:
            return
        e = self._do("build", build_enclave, p, heap, init=init)
        if e is not None:
            self.encls.setdefault(p.pid, []).append(e)

    @rule(
        i=st.integers(0, 7),
        j=st.integers(0, 9),
        request=IOCTLS,
        kind=st.integers(0, len(STRUCTS) + 2),
        fields=st.lists(U64, min_size=6, max_size=6),
    )
    def ioctl(self, i: int, j: int, request: int, kind: int, fields: list[int]) -> None:
        p = self._proc(i)
        if p is None:
            return
        arg: Any
        if kind < len(STRUCTS):
            arg = STRUCTS[kind]()
            for (name, *_), v in zip(arg._fields_, fields, strict=False):
                if name != "reserved":
                    setattr(arg, name, v % (1 << (8 * getattr(type(arg), name).size)))
        elif kind == len(STRUCTS):
            addrs = self._addrs(p)
            arg = addrs[fields[0] % len(addrs)] if addrs else fields[0]
        elif kind == len(STRUCTS) + 1:
            arg = None
        else:
            arg = fields[0]
        self._do("ioctl", p.ioctl, self._fd(p, j), request, arg)

    # -- memory --------------------------------------------------------------------------

    @rule(
        i=st.integers(0, 7),
        addr=st.one_of(WILD_ADDRS, st.integers(0, 31)),
        length=LENGTHS,
        prot=PROTS,
        flags=MAP_FLAGS,
        j=st.integers(0, 9),
        offset=OFFSETS,
    )
    def mmap(self, i: int, addr: int, length: int, prot: int, flags: int, j: int, offset: int) -> None:
        p = self._proc(i)
        if p is None:
            return
        if 0 <= addr < 32:  # near an existing mapping or enclave
            known = self._addrs(p)
            addr = known[addr % len(known)] + (addr // 8) * PAGE_SIZE if known else addr
        ret = self._do("mmap", p.mmap, addr, length, prot, flags, self._fd(p, j), offset)
        if ret is not None:
            self.mapped.setdefault(p.pid, []).append(ret)

    @rule(i=st.integers(0, 7), k=st.integers(0, 31), length=LENGTHS, wild=st.one_of(st.none(), WILD_ADDRS))
    def munmap(self, i: int, k: int, length: int, wild: int | None) -> None:
        p = self._proc(i)
        if p is None:
            return
        known = self._addrs(p)
        addr = wild if wild is not None else (known[k % len(known)] if known else 0)
        self._do("munmap", p.munmap, addr, length)

    @rule(i=st.integers(0, 7), k=st.integers(0, 31), length=LENGTHS, prot=PROTS)
    def mprotect(self, i: int, k: int, length: int, prot: int) -> None:
        p = self._proc(i)
        if p is None:
            return
        known = self._addrs(p) or [0]
        self._do("mprotect", p.mprotect, known[k % len(known)], length, prot)

    @rule(i=st.integers(0, 7), k=st.integers(0, 63), write=st.booleans())
    def touch(self, i: int, k: int, write: bool) -> None:
        p = self._proc(i)
        if p is None:
            return
        known = self._addrs(p) or [0]
        addr = known[k % len(known)] + (k // 16) * PAGE_SIZE
        if write:
            self._do("write", p.write, addr, b"\x5a")
        else:
            self._do("read", p.read, addr, 1)

    # -- enclaves ------------------------------------------------------------------------

    @rule(
        i=st.integers(0, 7),
        k=st.integers(0, 7),
        op=st.sampled_from([OP_PUT, OP_GET, OP_NOP]),
        tcs=st.booleans(),
    )
    def enter(self, i: int, k: int, op: int, tcs: bool) -> None:
        p = self._proc(i)
        if p is None or not self.encls.get(p.pid):
            return
        e = self.encls[p.pid][k % len(self.encls[p.pid])]
        self._do("enter", e.call, Op(type=op, value=k), 0x1000 if tcs else 0)

    @rule(
        i=st.integers(0, 7),
        j=st.integers(0, 7),
        pages=st.integers(1, 4),
        off=st.integers(0, 3),
        fixed=st.booleans(),
    )
    def map_fd(self, i: int, j: int, pages: int, off: int, fixed: bool) -> None:
        """A well-formed shared mapping of an open file (an enclave's range when MAP_FIXED):
        re-mapping a vEPC offset this way reaches the fault loop."""
        p = self._proc(i)
        if p is None or not p.fds:
            return
        encls = self.encls.get(p.pid, [])
        addr = encls[j % len(encls)].base + off * PAGE_SIZE if fixed and encls else 0
        flags = U.MAP_SHARED | (U.MAP_FIXED if addr else 0)
        fd = self._fd(p, j)
        ret = self._do(
            "map_fd", p.mmap, addr, pages * PAGE_SIZE, U.PROT_READ | U.PROT_WRITE, flags, fd, off * PAGE_SIZE
        )
        if ret is not None:
            self.mapped.setdefault(p.pid, []).append(ret)

    # -- SVN updates -----------------------------------------------------------------------

    @precondition(lambda self: any(not p.exited for p in self.procs))
    @rule(kind=st.sampled_from(["reload", "reload-raise", "store"]))
    def svn_update(self, kind: str) -> None:
        k = self.kernel
        if kind == "store":
            self._do("update_svn", k.svn.update_svn_store)
            return
        cur = k.machine.cpus[0].ucode
        svn = bytes(min(b + 1, 255) for b in cur.svn) if kind == "reload-raise" else cur.svn
        self._do("reload", k.svn.microcode_reload, MicrocodePatch(cur.revision + 1, svn))

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def epc_records_agree(self) -> None:
        if self.k is None:
            return
        rep = validate_epc(self.k)
        assert not rep.problems, rep.problems

    @invariant()
    def no_warn(self) -> None:
        if self.k is not None:
            assert self.k.log.warn_count == 0, self.k.log.format()

    def teardown(self) -> None:
        if self.k is None:
            return
        for p in self.procs:
            if not p.exited:
                p.exit()
        k = self.k
        rep = validate_epc(k, expect_empty=True)
        assert not rep.problems, rep.problems
        assert k.sgx_nr_free_pages.read() == self.free0
        assert not k.enclaves and not k.vepcs and k.sgx_usage_count == 0
        # /dev/shm files outlive every process (tmpfs, as in Linux): their pages stay allocated.
        tmpfs = sum(len(f.pages) for f in k.tmpfs.values())
        assert k.dram_pages <= self.dram0 + len(k._scratch) + tmpfs, (k.dram_pages, self.dram0, tmpfs)
        assert k.log.warn_count == 0, k.log.format()


def _settings(examples: int, steps: int, *, derandomize: bool = True) -> settings:
    return settings(
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        derandomize=derandomize,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


def test_random_syscalls_ci() -> None:
    run = KernelFuzz.TestCase
    run.settings = _settings(25, 40)
    run().runTest()


@pytest.mark.slow
def test_random_syscalls_slow() -> None:
    """At least 100,000 steps: seeded batches of 400 sequences (up to 100 steps each) until
    the steps counted after every rule reach 100,000."""
    steps = [0]

    class Counting(KernelFuzz):
        @invariant()
        def count_step(self) -> None:
            steps[0] += 1

    batch = 0
    while steps[0] < 100_000:
        run_state_machine_as_test(seed(batch)(Counting), settings=_settings(400, 100, derandomize=False))
        batch += 1
    assert steps[0] >= 100_000

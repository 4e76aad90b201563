"""A task spinning in page faults is an outcome, not a model bug.

Map /dev/sgx_vepc offset 0, touch it, munmap it, map the same offset again and read: Linux's
__sgx_vepc_fault finds the page in the vEPC's page_array and returns without inserting the PFN,
so the access faults again for ever. Without a scheduler the model reports that as
:class:`FaultLoop`; under the deterministic scheduler the run stops as ``stuck`` naming the
spinning task, and exploration reports a violation of kind ``stuck``.
"""

from __future__ import annotations

import random

import pytest
from tests.kernel.kernel_helpers import make_world, small_machine

from sgxsim.errors import ModelInvariantError, SgxSimError
from sgxsim.hw.arch import PAGE_SIZE
from sgxsim.kernel import FaultLoop, Kernel, Process
from sgxsim.kernel import uapi as U  # noqa: N812
from sgxsim.kernel.main import validate_epc
from sgxsim.sim.explore import Program, explore, replay
from sgxsim.sim.sched import STUCK_SPIN_DECISIONS, DeterministicScheduler, RandomWalk

RW = U.PROT_READ | U.PROT_WRITE


def remap_vepc_offset(p: Process) -> tuple[int, int]:
    """The fuzzer's sequence up to the hanging read; returns (fd, the new mapping)."""
    fd = p.open("/dev/sgx_vepc", U.O_RDWR)
    addr = p.mmap(0, PAGE_SIZE, RW, U.MAP_SHARED, fd, 0)
    p.read(addr, 1)
    p.munmap(addr, PAGE_SIZE)
    return fd, p.mmap(0, PAGE_SIZE, RW, U.MAP_SHARED, fd, 0)


def test_remapped_vepc_offset_is_a_fault_loop_not_an_invariant_error() -> None:
    w = make_world(16)
    p = w.proc()
    _fd, again = remap_vepc_offset(p)
    with pytest.raises(FaultLoop) as exc:
        p.read(again, 1)
    assert not isinstance(exc.value, ModelInvariantError) and isinstance(exc.value, SgxSimError)
    assert exc.value.addr == again and exc.value.owner == p.mm.owner
    assert "stuck in a page-fault loop" in str(exc.value)
    assert w.kernel.log.warn_count == 0
    # The hang is the process's, not the kernel's: everything else still works, and the
    # vEPC page comes back when the process exits.
    anon = p.alloc(b"ok")
    assert p.read(anon, 2) == b"ok"
    w.teardown()


def _hang_world(sched: DeterministicScheduler) -> tuple[Kernel, list[str]]:
    k = Kernel(small_machine(16), sched=sched)
    done: list[str] = []

    def hang() -> None:
        p = Process(k, "hang", cpu=0)
        _fd, again = remap_vepc_offset(p)
        p.read(again, 1)
        done.append("hang")

    def other() -> None:
        p = Process(k, "other", cpu=1)
        a = p.alloc(b"x" * 10)
        for _ in range(20):
            sched.preempt("user")
            assert p.read(a, 10) == b"x" * 10
        p.exit()
        done.append("other")

    sched.spawn(hang, name="hang", cpu=0)
    sched.spawn(other, name="other", cpu=1)
    return k, done


def test_scheduler_reports_the_spinning_task_stuck() -> None:
    with DeterministicScheduler(RandomWalk(random.Random(3))) as sched:
        k, done = _hang_world(sched)
        result = sched.run(max_steps=100_000)
        assert result.stuck and not (result.completed or result.deadlocked or result.step_limit_hit)
        assert result.spinning == ("hang",) and done == ["other"]
        assert result.total_steps < 100_000  # well before the step limit
        assert "hang spin in page faults" in result.describe()
        assert sched.find_task("hang").fault_retries > 0  # type: ignore[union-attr]
        assert k.log.warn_count == 0
        assert not validate_epc(k).problems


def test_stuck_detection_needs_every_runnable_task_spinning() -> None:
    """A task that keeps running beside the spinning one holds the detection off."""
    with DeterministicScheduler(RandomWalk(random.Random(5))) as sched:
        _k, _done = _hang_world(sched)
        ticks = []

        def busy() -> None:
            for i in range(3 * STUCK_SPIN_DECISIONS):
                sched.preempt("busy")
                ticks.append(i)

        sched.spawn(busy, name="busy", cpu=2)
        result = sched.run(max_steps=1_000_000)
        assert result.stuck and result.spinning == ("hang",)
        assert len(ticks) == 3 * STUCK_SPIN_DECISIONS


def test_exploration_reports_a_stuck_violation() -> None:
    prog = Program(name="vepc-remap", setup_fn=lambda sched, rng: _hang_world(sched)[0])
    res = explore(prog, schedules=2, seed=0, max_steps=200_000)
    v = res.violations[0]
    assert v.kind == "stuck" and v.invariant == "no-stuck-task"
    assert "'hang' spin in page faults" in v.message
    assert replay(prog, v).violations == (v,)

"""Helpers for in-enclave programs: link-time constants and a small trusted runtime.

Enclave code in sgxsim is Python source run by :mod:`sgxsim.hw.enclu` with an
``EnclaveContext`` (registers, checked memory accesses, the in-enclave ENCLU leaves).
Such a program has no linker: :func:`link_program` plays its part by prepending the
link-time constants (enclave offsets of the program itself, its stacks, data and heap) as
fixed-width assignments -- so the program's length, and with it the image layout, does not
depend on their values -- and optionally :data:`RUNTIME_SOURCE`, helpers every program may
call:

* ``rt_base(ctx)``: the enclave base, ``ctx.rip - ENCL_SELF`` (a RIP-relative ``lea``);
* ``rt_thread(ctx)``: the index of the TCS entered through (TCS pages sit at offset 0);
* ``rt_stack_top(ctx)``: top of that thread's stack page (``ENCL_STACK`` + 4 KiB per thread);
* ``Scratch(ctx, top)``: a bump allocator growing down from ``top`` in enclave memory, for the
  operands the leaves require inside ELRANGE (SECINFO, KEYREQUEST, TARGETINFO, ...);
* ``rt_secinfo``, ``rt_eaccept``, ``rt_emodpe``, ``rt_eacceptcopy``, ``rt_ereport`` and
  ``rt_egetkey``: each leaf with its operands placed, aligned, in scratch memory.

Models: the role of the linker script and of the selftest enclave's stack-local operand
structures (test_encl.c ``do_encl_eaccept``: ``struct sgx_secinfo secinfo __aligned(64)``).
"""

from __future__ import annotations

from collections.abc import Mapping

from sgxsim.errors import InvalidArgument
from sgxsim.sdk.enclaves import enclave_source

__all__ = ["RUNTIME_SOURCE", "link_program"]

#: Helpers available to every program linked with ``runtime=True`` (the bytes of
#: :mod:`sgxsim.sdk.enclaves.runtime`). Needs the constants ``ENCL_SELF`` and, for
#: ``rt_stack_top``, ``ENCL_STACK``.
RUNTIME_SOURCE = enclave_source("runtime")

_NAME_OK = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789")


def _constant_line(name: str, value: int | bool) -> str:
    if not isinstance(name, str) or not name or not set(name) <= _NAME_OK or name[0].isdigit():
        raise InvalidArgument(f"link-time constant name must be UPPER_CASE, got {name!r}")
    if isinstance(value, bool):
        # Same width as an int constant keeps the layout value-independent.
        return f"{name} = {value!s:<18}\n"
    if not isinstance(value, int) or not 0 <= value < 1 << 64:
        raise InvalidArgument(f"link-time constant {name} must be a u64, got {value!r}")
    return f"{name} = {value:#018x}\n"


def link_program(source: str, constants: Mapping[str, int | bool], *, runtime: bool = True) -> str:
    """``constants`` as fixed-width assignments, then (optionally) the runtime, then ``source``.

    Every constant line has the same length whatever its value, so a builder can lay the
    image out with placeholder values and fill in the real offsets without moving anything.
    """
    if not isinstance(source, str):
        raise InvalidArgument(f"program source must be a str, got {type(source).__name__}")
    header = "".join(_constant_line(name, value) for name, value in constants.items())
    return header + (RUNTIME_SOURCE if runtime else "") + source

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

__all__ = ["RUNTIME_SOURCE", "link_program"]

#: Helpers available to every program linked with ``runtime=True``. Needs the constants
#: ``ENCL_SELF`` and, for ``rt_stack_top``, ``ENCL_STACK``.
RUNTIME_SOURCE = '''
RT_PAGE_SIZE = 4096


def rt_base(ctx):
    return ctx.rip - ENCL_SELF


def rt_thread(ctx):
    return (ctx.rbx - rt_base(ctx)) // RT_PAGE_SIZE


def rt_stack_top(ctx):
    return rt_base(ctx) + ENCL_STACK + (rt_thread(ctx) + 1) * RT_PAGE_SIZE


class Scratch:
    """Bump allocator growing down from ``top`` (exclusive) in enclave memory."""

    def __init__(self, ctx, top):
        self.ctx = ctx
        self.top = top

    def alloc(self, size, align=8):
        self.top = (self.top - size) & ~(align - 1)
        return self.top

    def put(self, data, align=8):
        addr = self.alloc(len(data), align)
        self.ctx.write(addr, data)
        return addr


def rt_secinfo(scratch, flags):
    return scratch.put(flags.to_bytes(8, "little") + bytes(56), 64)


def rt_eaccept(ctx, scratch, page, flags):
    return ctx.eaccept(rt_secinfo(scratch, flags), page)


def rt_emodpe(ctx, scratch, page, flags):
    ctx.emodpe(rt_secinfo(scratch, flags), page)


def rt_eacceptcopy(ctx, scratch, dst, src, flags):
    return ctx.eacceptcopy(rt_secinfo(scratch, flags), dst, src)


def rt_ereport(ctx, scratch, targetinfo, reportdata):
    ti = scratch.put(bytes(targetinfo).ljust(512, b"\\0"), 512)
    rd = scratch.put(bytes(reportdata).ljust(64, b"\\0"), 128)
    out = scratch.alloc(432, 512)
    ctx.ereport(ti, rd, out)
    return ctx.read(out, 432)


def rt_egetkey(ctx, scratch, keyrequest):
    kr = scratch.put(bytes(keyrequest).ljust(512, b"\\0"), 512)
    out = scratch.alloc(16, 16)
    status = ctx.egetkey(kr, out)
    return status, ctx.read(out, 16)
'''

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

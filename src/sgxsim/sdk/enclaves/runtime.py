"""Enclave code: the sdk runtime helpers linked into every program built with ``runtime=True``.

Needs the link-time constants ``ENCL_SELF`` and, for ``rt_stack_top``, ``ENCL_STACK``. See
:mod:`sgxsim.sdk.runtime` for what each helper does.
"""

if __name__ != "enclave":  # on the host (mypy, tests); in an enclave, earlier parts define these
    from sgxsim.hw.enclu import EnclaveContext
    from sgxsim.sdk.enclaves._link import ENCL_SELF, ENCL_STACK

RT_PAGE_SIZE = 4096


def rt_base(ctx: "EnclaveContext") -> int:
    return ctx.rip - ENCL_SELF


def rt_thread(ctx: "EnclaveContext") -> int:
    return (ctx.rbx - rt_base(ctx)) // RT_PAGE_SIZE


def rt_stack_top(ctx: "EnclaveContext") -> int:
    return rt_base(ctx) + ENCL_STACK + (rt_thread(ctx) + 1) * RT_PAGE_SIZE


class Scratch:
    """Bump allocator growing down from ``top`` (exclusive) in enclave memory."""

    def __init__(self, ctx: "EnclaveContext", top: int) -> None:
        self.ctx = ctx
        self.top = top

    def alloc(self, size: int, align: int = 8) -> int:
        self.top = (self.top - size) & ~(align - 1)
        return self.top

    def put(self, data: bytes, align: int = 8) -> int:
        addr = self.alloc(len(data), align)
        self.ctx.write(addr, data)
        return addr


def rt_secinfo(scratch: Scratch, flags: int) -> int:
    return scratch.put(flags.to_bytes(8, "little") + bytes(56), 64)


def rt_eaccept(ctx: "EnclaveContext", scratch: Scratch, page: int, flags: int) -> int:
    return ctx.eaccept(rt_secinfo(scratch, flags), page)


def rt_emodpe(ctx: "EnclaveContext", scratch: Scratch, page: int, flags: int) -> None:
    ctx.emodpe(rt_secinfo(scratch, flags), page)


def rt_eacceptcopy(ctx: "EnclaveContext", scratch: Scratch, dst: int, src: int, flags: int) -> int:
    return ctx.eacceptcopy(rt_secinfo(scratch, flags), dst, src)


def rt_ereport(ctx: "EnclaveContext", scratch: Scratch, targetinfo: bytes, reportdata: bytes) -> bytes:
    ti = scratch.put(bytes(targetinfo).ljust(512, b"\0"), 512)
    rd = scratch.put(bytes(reportdata).ljust(64, b"\0"), 128)
    out = scratch.alloc(432, 512)
    ctx.ereport(ti, rd, out)
    return ctx.read(out, 432)


def rt_egetkey(ctx: "EnclaveContext", scratch: Scratch, keyrequest: bytes) -> tuple[int, bytes]:
    kr = scratch.put(bytes(keyrequest).ljust(512, b"\0"), 512)
    out = scratch.alloc(16, 16)
    status = ctx.egetkey(kr, out)
    return status, ctx.read(out, 16)

"""Enclave code: the enclave every process of an SVN-update exploration runs (:mod:`sgxsim.sim.svn.kit`).

The op block at RDI (untrusted memory) is ``{type, value, flag, pad, n, ret}`` (u64 each):
PUT (0) stores ``value`` in the data page (enclave offset 0x2000), GET (1) copies it back into
``value``; SPIN (2) reads ``flag`` until it is non-zero or ``n`` reads were made and writes the
count to ``ret`` (a thread that stays inside, re-entering after each AEX). Linked without
constants or the sdk runtime.
"""

if __name__ != "enclave":  # on the host (mypy, tests)
    from sgxsim.hw.enclu import EnclaveContext

OP_PUT, OP_GET, OP_SPIN = 0, 1, 2
DATA_OFFSET = 0x2000


def enclave_entry(ctx: "EnclaveContext") -> None:
    op = ctx.rdi
    t = ctx.read_u64(op)
    buf = ctx.base + DATA_OFFSET
    if t == OP_PUT:
        ctx.write_u64(buf, ctx.read_u64(op + 8))
    elif t == OP_GET:
        ctx.write_u64(op + 8, ctx.read_u64(buf))
    elif t == OP_SPIN:
        flag = op + 16
        n = ctx.read_u64(op + 32)
        i = 0
        while i < n and ctx.read_u64(flag) == 0:
            i += 1
        ctx.write_u64(op + 40, i)
    ctx.eexit(ctx.rcx)

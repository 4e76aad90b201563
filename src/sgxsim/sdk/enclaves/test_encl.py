"""Enclave code: the kernel selftest enclave's program (test_encl.c + test_encl_bootstrap.S).

Body of both entry programs; :func:`sgxsim.sdk.test_encl.encl_program` prepends the link-time
constants ``ENCL_SELF``, ``ENCL_DYN``, ``ENCL_BUFFER`` and ``ENCL_STACK``. Linked without the sdk
runtime.
"""

if __name__ != "enclave":  # on the host (mypy, tests); in an enclave, earlier parts define these
    from sgxsim.hw.enclu import EnclaveContext
    from sgxsim.sdk.enclaves._link import ENCL_BUFFER, ENCL_DYN, ENCL_SELF, ENCL_STACK


def memset(ctx: "EnclaveContext", dest: int, c: int, n: int) -> None:
    ctx.write(dest, bytes([c]) * n)


def memcpy_u64(ctx: "EnclaveContext", dest: int, value: int) -> None:
    ctx.write_u64(dest, value)


def do_encl_op_put_to_buf(ctx: "EnclaveContext", base: int, sp: int, op: int) -> None:
    memcpy_u64(ctx, base + ENCL_BUFFER, ctx.read_u64(op + 8))


def do_encl_op_get_from_buf(ctx: "EnclaveContext", base: int, sp: int, op: int) -> None:
    memcpy_u64(ctx, op + 8, ctx.read_u64(base + ENCL_BUFFER))


def do_encl_op_put_to_addr(ctx: "EnclaveContext", base: int, sp: int, op: int) -> None:
    memcpy_u64(ctx, ctx.read_u64(op + 16), ctx.read_u64(op + 8))


def do_encl_op_get_from_addr(ctx: "EnclaveContext", base: int, sp: int, op: int) -> None:
    memcpy_u64(ctx, op + 8, ctx.read_u64(ctx.read_u64(op + 16)))


def do_encl_op_nop(ctx: "EnclaveContext", base: int, sp: int, op: int) -> None:
    pass


def secinfo_on_stack(ctx: "EnclaveContext", sp: int, flags: int) -> int:
    # struct sgx_secinfo secinfo __aligned(64) = {0}; secinfo.flags = op->flags;
    secinfo = (sp - 64) & ~63
    memset(ctx, secinfo, 0, 64)
    memcpy_u64(ctx, secinfo, flags)
    return secinfo


def do_encl_eaccept(ctx: "EnclaveContext", base: int, sp: int, op: int) -> None:
    secinfo = secinfo_on_stack(ctx, sp, ctx.read_u64(op + 16))
    rax = ctx.eaccept(secinfo, ctx.read_u64(op + 8))
    memcpy_u64(ctx, op + 24, rax & 0xFFFFFFFF)


def do_encl_emodpe(ctx: "EnclaveContext", base: int, sp: int, op: int) -> None:
    secinfo = secinfo_on_stack(ctx, sp, ctx.read_u64(op + 16))
    ctx.emodpe(secinfo, ctx.read_u64(op + 8))


def do_encl_init_tcs_page(ctx: "EnclaveContext", base: int, sp: int, op: int) -> None:
    tcs = ctx.read_u64(op + 8)
    memset(ctx, tcs, 0, 16)  # STATE and FLAGS
    memcpy_u64(ctx, tcs + 16, ctx.read_u64(op + 16))  # OSSA
    memset(ctx, tcs + 24, 0, 4)  # CSSA
    ctx.write(tcs + 28, (1).to_bytes(4, "little"))  # NSSA
    memcpy_u64(ctx, tcs + 32, ctx.read_u64(op + 24))  # OENTRY
    memset(ctx, tcs + 40, 0, 24)  # AEP, OFSBASE, OGSBASE
    ctx.write(tcs + 64, b"\xff" * 8)  # FSLIMIT, GSLIMIT
    memset(ctx, tcs + 72, 0, 4024)  # reserved


ENCL_OP_ARRAY = (
    do_encl_op_put_to_buf,
    do_encl_op_get_from_buf,
    do_encl_op_put_to_addr,
    do_encl_op_get_from_addr,
    do_encl_op_nop,
    do_encl_eaccept,
    do_encl_emodpe,
    do_encl_init_tcs_page,
)


def encl_body(ctx: "EnclaveContext", base: int, sp: int, op: int) -> None:
    kind = ctx.read_u64(op)
    if kind >= len(ENCL_OP_ARRAY):
        return
    ENCL_OP_ARRAY[kind](ctx, base, sp, op)


def enclave_entry(ctx: "EnclaveContext") -> None:
    base = ctx.rip - ENCL_SELF  # lea __encl_base(%rip)
    if ENCL_DYN:
        sp = ctx.rbx - 1  # encl_dyn_entry: stack right below the TCS
    else:
        sp = base + ENCL_STACK + (ctx.rbx - base)
    sp -= 8
    ctx.write_u64(sp, ctx.rcx)  # push the address after EENTER
    encl_body(ctx, base, sp, ctx.rdi)
    ctx.eexit(ctx.read_u64(sp))  # pop %rbx; mov $4, %rax; enclu

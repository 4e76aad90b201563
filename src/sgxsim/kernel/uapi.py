"""The Linux SGX user ABI: ioctl numbers, argument structures, the vDSO run structure, constants.

Structures are ``ctypes.Structure`` classes whose names, field names, sizes and offsets are
those of ``arch/x86/include/uapi/asm/sgx.h``, so ``bytes(arg)`` is exactly what a C program
passes and a C test translates line by line. Request numbers are computed with the standard
``_IOC(dir, type, nr, size)`` encoding of ``include/uapi/asm-generic/ioctl.h``.

Also here: the Linux x86-64 values of the ``open``/``mmap``/``mprotect`` flags, signals and
errno numbers that sgxsim's processes use (Python's ``os``/``mmap``/``errno`` constants are
accepted where they exist and have the same values on Linux).

Models: arch/x86/include/uapi/asm/sgx.h (Linux 6.x, with the SGX2 ioctls and
``struct sgx_enclave_run``); include/uapi/asm-generic/{ioctl,mman-common,fcntl,errno-base,
errno}.h; arch/x86/include/uapi/asm/{mman,signal}.h; include/linux/errno.h (ERESTARTSYS).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

from sgxsim.errors import InvalidArgument

__all__ = [
    "EACCES",
    "EAGAIN",
    "EBADF",
    "EBUSY",
    "EENTER",
    "EEXIT",
    "EFAULT",
    "EINTR",
    "EINVAL",
    "EIO",
    "ENODEV",
    "ENOENT",
    "ENOIOCTLCMD",
    "ENOMEM",
    "ENOTTY",
    "ENXIO",
    "EOPNOTSUPP",
    "EPERM",
    "ERESTARTSYS",
    "ERESUME",
    "MAP_ANONYMOUS",
    "MAP_FIXED",
    "MAP_PRIVATE",
    "MAP_SHARED",
    "MAP_TYPE",
    "O_CLOEXEC",
    "O_RDONLY",
    "O_RDWR",
    "O_WRONLY",
    "PROT_EXEC",
    "PROT_NONE",
    "PROT_READ",
    "PROT_WRITE",
    "SGX_IOC_ENCLAVE_ADD_PAGES",
    "SGX_IOC_ENCLAVE_CREATE",
    "SGX_IOC_ENCLAVE_INIT",
    "SGX_IOC_ENCLAVE_MODIFY_TYPES",
    "SGX_IOC_ENCLAVE_PROVISION",
    "SGX_IOC_ENCLAVE_REMOVE_PAGES",
    "SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS",
    "SGX_IOC_VEPC_REMOVE_ALL",
    "SGX_MAGIC",
    "SGX_PAGE_MEASURE",
    "SIGBUS",
    "SIGKILL",
    "SIGSEGV",
    "SIGUSR1",
    "IoctlArg",
    "sgx_enclave_add_pages",
    "sgx_enclave_create",
    "sgx_enclave_init",
    "sgx_enclave_modify_types",
    "sgx_enclave_provision",
    "sgx_enclave_remove_pages",
    "sgx_enclave_restrict_permissions",
    "sgx_enclave_run",
]

# --------------------------------------------------------------------------------------------
# _IOC encoding (include/uapi/asm-generic/ioctl.h)
# --------------------------------------------------------------------------------------------

_IOC_NRBITS = 8
_IOC_TYPEBITS = 8
_IOC_SIZEBITS = 14
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS
_IOC_NONE = 0
_IOC_WRITE = 1
_IOC_READ = 2


def _IOC(direction: int, typ: int, nr: int, size: int) -> int:  # noqa: N802 - the C macro's name
    """``_IOC(dir, type, nr, size)``: direction in bits 31:30, size 29:16, type 15:8, nr 7:0."""
    if not 0 <= size < (1 << _IOC_SIZEBITS):
        raise InvalidArgument(f"ioctl argument size {size} does not fit in {_IOC_SIZEBITS} bits")
    return (
        (direction << _IOC_DIRSHIFT)
        | (typ << _IOC_TYPESHIFT)
        | (nr << _IOC_NRSHIFT)
        | (size << _IOC_SIZESHIFT)
    )


def _IO(typ: int, nr: int) -> int:  # noqa: N802
    return _IOC(_IOC_NONE, typ, nr, 0)


def _IOW(typ: int, nr: int, struct: type[ctypes.Structure]) -> int:  # noqa: N802
    return _IOC(_IOC_WRITE, typ, nr, ctypes.sizeof(struct))


def _IOWR(typ: int, nr: int, struct: type[ctypes.Structure]) -> int:  # noqa: N802
    return _IOC(_IOC_READ | _IOC_WRITE, typ, nr, ctypes.sizeof(struct))


def ioc_size(request: int) -> int:
    """``_IOC_SIZE(nr)``: the argument size encoded in a request number."""
    return (request >> _IOC_SIZESHIFT) & ((1 << _IOC_SIZEBITS) - 1)


# --------------------------------------------------------------------------------------------
# Structures (arch/x86/include/uapi/asm/sgx.h)
# --------------------------------------------------------------------------------------------

_u64 = ctypes.c_uint64
_u32 = ctypes.c_uint32
_u16 = ctypes.c_uint16


class _UapiStruct(ctypes.Structure):
    """Base: packed little-endian C structure with a readable ``repr``."""

    _pack_ = 1

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{name}={getattr(self, name)!r}" for name, *_ in self._fields_ if name != "reserved"
        )
        return f"{type(self).__name__}({parts})"


class sgx_enclave_create(_UapiStruct):  # noqa: N801 - uapi name
    """``struct sgx_enclave_create``: ``src`` = user address of a 4 KiB SECS."""

    _fields_ = [("src", _u64)]


class sgx_enclave_add_pages(_UapiStruct):  # noqa: N801
    """``struct sgx_enclave_add_pages``: src, offset, length, SECINFO address, flags, count (out)."""

    _fields_ = [
        ("src", _u64),
        ("offset", _u64),
        ("length", _u64),
        ("secinfo", _u64),
        ("flags", _u64),
        ("count", _u64),
    ]


class sgx_enclave_init(_UapiStruct):  # noqa: N801
    """``struct sgx_enclave_init``: user address of the SIGSTRUCT."""

    _fields_ = [("sigstruct", _u64)]


class sgx_enclave_provision(_UapiStruct):  # noqa: N801
    """``struct sgx_enclave_provision``: a file descriptor of ``/dev/sgx_provision``."""

    _fields_ = [("fd", _u64)]


class sgx_enclave_restrict_permissions(_UapiStruct):  # noqa: N801
    """``struct sgx_enclave_restrict_permissions``: offset, length, permissions, result (out), count (out)."""

    _fields_ = [
        ("offset", _u64),
        ("length", _u64),
        ("permissions", _u64),
        ("result", _u64),
        ("count", _u64),
    ]


class sgx_enclave_modify_types(_UapiStruct):  # noqa: N801
    """``struct sgx_enclave_modify_types``: offset, length, page_type, result (out), count (out)."""

    _fields_ = [
        ("offset", _u64),
        ("length", _u64),
        ("page_type", _u64),
        ("result", _u64),
        ("count", _u64),
    ]


class sgx_enclave_remove_pages(_UapiStruct):  # noqa: N801
    """``struct sgx_enclave_remove_pages``: offset, length, count (out)."""

    _fields_ = [("offset", _u64), ("length", _u64), ("count", _u64)]


class sgx_enclave_run(_UapiStruct):  # noqa: N801
    """``struct sgx_enclave_run`` (256 bytes), the in/out block of ``__vdso_sgx_enter_enclave``.

    ``user_handler`` is a u64 in C. In the model it may hold a Python callable
    ``handler(rdi, rsi, rdx, ursp, r8, r9, run) -> int`` (kept on the instance; the raw field
    then reads as a non-zero token), or an int: 0 (none) or an address registered with
    ``Process.register_function``.
    """

    _fields_ = [
        ("tcs", _u64),
        ("function", _u32),
        ("exception_vector", _u16),
        ("exception_error_code", _u16),
        ("exception_addr", _u64),
        ("user_handler", _u64),
        ("user_data", _u64),
        ("reserved", _u64 * 27),
    ]

    def reserved_is_zero(self) -> bool:
        """True iff all 216 reserved bytes are zero (the vDSO returns -EINVAL otherwise)."""
        return not any(self.reserved)


#: Token the raw ``user_handler`` field holds while a Python callable is installed.
_CALLABLE_TOKEN = 0xFFFF_FFFF_FFFF_F000
_RUN_HANDLER_FIELD: Any = sgx_enclave_run.__dict__["user_handler"]


def _get_user_handler(self: sgx_enclave_run) -> Callable[..., int] | int:
    fn = self.__dict__.get("_user_handler_callable")
    if fn is not None:
        return fn  # type: ignore[no-any-return]
    return int(_RUN_HANDLER_FIELD.__get__(self, sgx_enclave_run))


def _set_user_handler(self: sgx_enclave_run, value: Callable[..., int] | int) -> None:
    if callable(value):
        self.__dict__["_user_handler_callable"] = value
        _RUN_HANDLER_FIELD.__set__(self, _CALLABLE_TOKEN)
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument(f"user_handler must be a callable or an int address, got {value!r}")
    self.__dict__.pop("_user_handler_callable", None)
    _RUN_HANDLER_FIELD.__set__(self, value)


setattr(sgx_enclave_run, "user_handler", property(_get_user_handler, _set_user_handler))  # noqa: B010

#: Every ioctl argument structure, for type checks.
IoctlArg = (
    sgx_enclave_create
    | sgx_enclave_add_pages
    | sgx_enclave_init
    | sgx_enclave_provision
    | sgx_enclave_restrict_permissions
    | sgx_enclave_modify_types
    | sgx_enclave_remove_pages
)

# --------------------------------------------------------------------------------------------
# Request numbers
# --------------------------------------------------------------------------------------------

SGX_MAGIC = 0xA4
#: ``enum sgx_page_flags``: measure the page with EEXTEND.
SGX_PAGE_MEASURE = 0x01

SGX_IOC_ENCLAVE_CREATE = _IOW(SGX_MAGIC, 0x00, sgx_enclave_create)
SGX_IOC_ENCLAVE_ADD_PAGES = _IOWR(SGX_MAGIC, 0x01, sgx_enclave_add_pages)
SGX_IOC_ENCLAVE_INIT = _IOW(SGX_MAGIC, 0x02, sgx_enclave_init)
SGX_IOC_ENCLAVE_PROVISION = _IOW(SGX_MAGIC, 0x03, sgx_enclave_provision)
SGX_IOC_VEPC_REMOVE_ALL = _IO(SGX_MAGIC, 0x04)
SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS = _IOWR(SGX_MAGIC, 0x05, sgx_enclave_restrict_permissions)
SGX_IOC_ENCLAVE_MODIFY_TYPES = _IOWR(SGX_MAGIC, 0x06, sgx_enclave_modify_types)
SGX_IOC_ENCLAVE_REMOVE_PAGES = _IOWR(SGX_MAGIC, 0x07, sgx_enclave_remove_pages)

#: Request number -> the argument structure the driver copies from user memory.
IOCTL_ARG_TYPES: dict[int, type[ctypes.Structure]] = {
    SGX_IOC_ENCLAVE_CREATE: sgx_enclave_create,
    SGX_IOC_ENCLAVE_ADD_PAGES: sgx_enclave_add_pages,
    SGX_IOC_ENCLAVE_INIT: sgx_enclave_init,
    SGX_IOC_ENCLAVE_PROVISION: sgx_enclave_provision,
    SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS: sgx_enclave_restrict_permissions,
    SGX_IOC_ENCLAVE_MODIFY_TYPES: sgx_enclave_modify_types,
    SGX_IOC_ENCLAVE_REMOVE_PAGES: sgx_enclave_remove_pages,
}

# ENCLU leaves the vDSO accepts / reports (arch/x86/include/asm/enclu.h).
EENTER = 0x02
ERESUME = 0x03
EEXIT = 0x04

# --------------------------------------------------------------------------------------------
# Linux x86-64 constants
# --------------------------------------------------------------------------------------------

O_RDONLY = 0o0
O_WRONLY = 0o1
O_RDWR = 0o2
O_ACCMODE = 0o3
O_CLOEXEC = 0o2000000

PROT_NONE = 0x0
PROT_READ = 0x1
PROT_WRITE = 0x2
PROT_EXEC = 0x4
PROT_SEM = 0x8
PROT_GROWSDOWN = 0x01000000
PROT_GROWSUP = 0x02000000

MAP_SHARED = 0x01
MAP_PRIVATE = 0x02
MAP_SHARED_VALIDATE = 0x03
MAP_TYPE = 0x0F
MAP_FIXED = 0x10
MAP_ANONYMOUS = 0x20
MAP_NORESERVE = 0x4000
MAP_POPULATE = 0x8000
MAP_FIXED_NOREPLACE = 0x100000

SIGKILL = 9
SIGBUS = 7
SIGSEGV = 11
SIGUSR1 = 10
SIGINT = 2

# si_code values for SIGSEGV / SIGBUS (include/uapi/asm-generic/siginfo.h).
SEGV_MAPERR = 1
SEGV_ACCERR = 2
BUS_ADRERR = 2

# errno (include/uapi/asm-generic/errno-base.h, errno.h; include/linux/errno.h).
EPERM = 1
ENOENT = 2
EINTR = 4
EIO = 5
ENXIO = 6
EBADF = 9
EAGAIN = 11
ENOMEM = 12
EACCES = 13
EFAULT = 14
EBUSY = 16
EEXIST = 17
ENODEV = 19
EINVAL = 22
ENOTTY = 25
#: x86-64 Linux EOPNOTSUPP (== ENOTSUP).
EOVERFLOW = 75
EOPNOTSUPP = 95
#: Kernel-internal: "restart the system call"; user space sees EINTR when it is not restarted.
ERESTARTSYS = 512
#: Kernel-internal: "no such ioctl"; the VFS turns it into ENOTTY.
ENOIOCTLCMD = 515

# READ_IMPLIES_EXEC personality bit (include/uapi/linux/personality.h).
READ_IMPLIES_EXEC = 0x0400000

"""The enclave loader: builds an image into an enclave through the SGX ioctls, then maps it.

It makes the system calls the kernel selftests make (load.c ``encl_load``/``encl_build`` and
main.c ``setup_test_encl``), in the same order and with the same arguments:

1. ``open("/dev/sgx_enclave", O_RDWR)``; sanity ``mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd,
   0)`` and the same with ``PROT_EXEC`` (fails if /dev is mounted noexec), each unmapped again;
2. reserve ``2 * size`` bytes ``PROT_NONE`` private anonymous memory, align the base up to
   ``size`` and unmap the slack on both sides (``encl_map_area``);
3. ``SGX_IOC_ENCLAVE_CREATE`` with the SECS (``ssa_frame_size``, attributes, xfrm, base, size)
   in user memory;
4. optionally ``SGX_IOC_ENCLAVE_PROVISION`` with a descriptor of ``/dev/sgx_provision``;
5. ``SGX_IOC_ENCLAVE_ADD_PAGES`` per segment: the contents are first written to an anonymous
   user buffer, the SECINFO to user memory, ``flags = SGX_PAGE_MEASURE`` iff measured;
6. ``SGX_IOC_ENCLAVE_INIT`` with the SIGSTRUCT in user memory;
7. ``mmap(base + offset, size, prot, MAP_SHARED | MAP_FIXED, fd, 0)`` per segment (pages are
   added before mapping because their permissions cap the VMA permissions).

Every failure is the ``OSError`` the failing system call raised (errno as Linux sets it); the
loader releases what it set up (``encl_delete``) before re-raising.

Models: tools/testing/selftests/sgx/load.c, main.c (setup_test_encl, ENCL_CALL), call.S.
Differs: the selftests keep the segment source buffers until ``encl_delete``; the loader frees
each one after its ADD_PAGES (the kernel copied the pages). The selftests add a segment with one
ADD_PAGES from a segment-sized buffer; the loader adds a segment larger than
:data:`ADD_PAGES_WINDOW` in window-sized calls at successive offsets (as loaders that add page by
page do), copying pages that hold data through a fresh window each and adding the all-zero rest
from one never-written window reused at every offset, so host memory for the source stays bounded
(the pages added, their order, SECINFO and measurement are the same).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import rsa

from sgxsim.errors import InvalidArgument
from sgxsim.hw.arch import PAGE_SIZE, Secinfo, Sigstruct
from sgxsim.kernel import uapi
from sgxsim.kernel.process import Process
from sgxsim.sdk.enclaves import register_enclave_sources
from sgxsim.sdk.image import EnclaveImage, Segment
from sgxsim.sdk.sign import sign_enclave

__all__ = [
    "ADD_PAGES_WINDOW",
    "SGX_ENCLAVE_DEVICE",
    "SGX_PROVISION_DEVICE",
    "Enclave",
    "encl_build",
    "encl_ioc_add_pages",
    "encl_ioc_create",
    "encl_ioc_init",
    "encl_ioc_provision",
    "encl_map_area",
    "encl_map_segments",
    "load_enclave",
]

SGX_ENCLAVE_DEVICE = "/dev/sgx_enclave"
SGX_PROVISION_DEVICE = "/dev/sgx_provision"
#: Most bytes one SGX_IOC_ENCLAVE_ADD_PAGES call of the loader adds (its source buffer's size).
ADD_PAGES_WINDOW = 64 << 20


def _user_copy_of(proc: Process, data: bytes) -> int:
    """``data`` in fresh anonymous user memory (the C program's own object); its address."""
    return proc.alloc(data)


def _free_user_copy(proc: Process, addr: int, size: int) -> None:
    proc.munmap(addr, max(size, 1))


def encl_map_area(proc: Process, size: int) -> int:
    """Reserve an enclave-sized, size-aligned range of address space; returns the base.

    Models: load.c ``encl_map_area`` (2 * size PROT_NONE MAP_PRIVATE|MAP_ANONYMOUS, base aligned
    up to size, both slack pieces unmapped). Outcomes: the base; OSError from mmap (ENOMEM).
    """
    area = proc.mmap(0, 2 * size, uapi.PROT_NONE, uapi.MAP_PRIVATE | uapi.MAP_ANONYMOUS, -1, 0)
    base = (area + size - 1) & ~(size - 1)
    if base > area:
        proc.munmap(area, base - area)
    if area + size > base:
        proc.munmap(base + size, area + size - base)
    return base


def encl_ioc_create(proc: Process, fd: int, image: EnclaveImage, base: int) -> None:
    """SGX_IOC_ENCLAVE_CREATE with ``image.secs(base)`` in user memory.

    Models: load.c ``encl_ioc_create``. Outcomes: None; OSError (EINVAL: size not a power of
    two / already created; EIO: ECREATE faulted; EFAULT; ENOMEM).
    """
    secs = image.secs(base).pack()
    src = _user_copy_of(proc, secs)
    try:
        proc.ioctl(fd, uapi.SGX_IOC_ENCLAVE_CREATE, uapi.sgx_enclave_create(src=src))
    finally:
        _free_user_copy(proc, src, len(secs))


def encl_ioc_add_pages(proc: Process, fd: int, seg: Segment) -> int:
    """SGX_IOC_ENCLAVE_ADD_PAGES for one segment; returns the bytes added (the kernel's ``count``).

    A segment of at most :data:`ADD_PAGES_WINDOW` bytes is one call from a segment-sized buffer;
    a larger one is one call per window at successive offsets: windows that hold part of
    ``seg.data`` are copied into fresh anonymous memory, all-zero windows come from one
    never-written buffer reused for each (it reads as the zero page). A call that adds less than
    it was asked (a pending signal) ends the segment with the total so far.
    Models: load.c ``encl_ioc_add_pages`` (SECINFO {flags}, SGX_PAGE_MEASURE iff measured).
    Outcomes: the count; OSError (EINVAL: bad SECINFO/offset/length or state; EBUSY: page
    already added; EIO: EADD/EEXTEND faulted; ENOMEM; EFAULT; EACCES; EINTR).
    Differs: the selftests make one call per segment (see the module docstring).
    """
    window = min(seg.size, ADD_PAGES_WINDOW)
    data_end = len(seg.data) if any(seg.data) else 0
    secinfo = Secinfo(flags=seg.flags).pack()
    secinfo_addr = _user_copy_of(proc, secinfo)
    zero_src: int | None = None
    added = 0
    try:
        for off in range(0, seg.size, window):
            length = min(window, seg.size - off)
            if off < data_end:
                src = proc.alloc(length)
                try:
                    proc.write(src, seg.data[off : off + length])
                    count = _add_pages_call(proc, fd, seg, src, off, length, secinfo_addr)
                finally:
                    _free_user_copy(proc, src, length)
            else:
                if zero_src is None:
                    zero_src = proc.alloc(window)
                count = _add_pages_call(proc, fd, seg, zero_src, off, length, secinfo_addr)
            added += count
            if count < length:
                break
        return added
    finally:
        _free_user_copy(proc, secinfo_addr, len(secinfo))
        if zero_src is not None:
            _free_user_copy(proc, zero_src, window)


def _add_pages_call(
    proc: Process, fd: int, seg: Segment, src: int, off: int, length: int, secinfo: int
) -> int:
    """One ADD_PAGES of ``length`` bytes of ``seg`` at segment offset ``off`` from ``src``."""
    ioc = uapi.sgx_enclave_add_pages(
        src=src,
        offset=seg.offset + off,
        length=length,
        secinfo=secinfo,
        flags=uapi.SGX_PAGE_MEASURE if seg.measure else 0,
        count=0,
    )
    proc.ioctl(fd, uapi.SGX_IOC_ENCLAVE_ADD_PAGES, ioc)
    return int(ioc.count)


def encl_ioc_provision(proc: Process, fd: int) -> None:
    """Grant the PROVISIONKEY attribute: SGX_IOC_ENCLAVE_PROVISION with a /dev/sgx_provision fd.

    Models: the Intel PSW's use of SGX_IOC_ENCLAVE_PROVISION (open the provision device, pass its
    descriptor, close it: the kernel keeps the widened attribute mask). Outcomes: None;
    OSError (ENOENT: no /dev/sgx_provision; EINVAL from the ioctl).
    """
    pfd = proc.open(SGX_PROVISION_DEVICE, uapi.O_RDWR)
    try:
        proc.ioctl(fd, uapi.SGX_IOC_ENCLAVE_PROVISION, uapi.sgx_enclave_provision(fd=pfd))
    finally:
        proc.close(pfd)


def encl_ioc_init(proc: Process, fd: int, sigstruct: Sigstruct) -> None:
    """SGX_IOC_ENCLAVE_INIT with ``sigstruct`` in user memory.

    Models: load.c ``encl_build`` (INIT step). Outcomes: None; OSError (EACCES: attributes
    beyond the allowed mask, e.g. PROVISIONKEY without SGX_IOC_ENCLAVE_PROVISION; EINVAL: bad
    vendor/reserved bits or state; EPERM: EINIT returned an SGX error code such as
    SGX_INVALID_MEASUREMENT; EIO: EINIT faulted; EFAULT; EINTR).
    """
    raw = sigstruct.pack()
    addr = _user_copy_of(proc, raw)
    try:
        proc.ioctl(fd, uapi.SGX_IOC_ENCLAVE_INIT, uapi.sgx_enclave_init(sigstruct=addr))
    finally:
        _free_user_copy(proc, addr, len(raw))


def encl_map_segments(proc: Process, fd: int, image: EnclaveImage, base: int) -> None:
    """mmap every segment MAP_SHARED|MAP_FIXED at ``base + offset`` with its protection.

    Models: main.c ``setup_test_encl`` ("An enclave consumer only must do this"). Outcomes:
    None; OSError (EACCES: protection beyond the pages' EPCM permissions; EINVAL).
    """
    for seg in image.segments:
        proc.mmap(base + seg.offset, seg.size, seg.prot, uapi.MAP_SHARED | uapi.MAP_FIXED, fd, 0)


def encl_build(
    proc: Process, fd: int, image: EnclaveImage, sigstruct: Sigstruct, *, provision: bool = False
) -> int:
    """Reserve the area, CREATE, (PROVISION), ADD_PAGES per segment, INIT; returns the base.

    Models: load.c ``encl_build``. On failure the reserved area is unmapped and the OSError of
    the failing call propagates. Like the SGX uRTS for sgx-gdb, it first registers the enclave
    modules' files with the machine (:func:`~sgxsim.sdk.enclaves.register_enclave_sources`).
    """
    register_enclave_sources(proc.k.machine)
    base = encl_map_area(proc, image.size)
    try:
        encl_ioc_create(proc, fd, image, base)
        if provision:
            encl_ioc_provision(proc, fd)
        for seg in image.segments:
            encl_ioc_add_pages(proc, fd, seg)
        encl_ioc_init(proc, fd, sigstruct)
    except BaseException:
        proc.munmap(base, image.size)
        raise
    return base


@dataclass
class Enclave:
    """A loaded, initialized and mapped enclave in ``proc`` (the selftests' ``struct encl``).

    ``run`` is the ``struct sgx_enclave_run`` the helpers use when none is passed; ``op_buffer``
    is a page of the process's memory where :meth:`call_op` places op structures.
    """

    proc: Process
    fd: int
    base: int
    image: EnclaveImage
    sigstruct: Sigstruct
    op_buffer: int
    run: uapi.sgx_enclave_run = field(default_factory=uapi.sgx_enclave_run)
    closed: bool = False

    @property
    def size(self) -> int:
        """``encl->encl_size``."""
        return self.image.size

    @property
    def segments(self) -> tuple[Segment, ...]:
        """``encl->segment_tbl``."""
        return self.image.segments

    @property
    def tcs(self) -> tuple[int, ...]:
        """Linear addresses of the image's TCS pages."""
        return tuple(self.base + off for off in self.image.tcs_offsets)

    def addr(self, where: str | int) -> int:
        """Linear address of a symbol or of an enclave offset."""
        off = self.image.symbol(where) if isinstance(where, str) else where
        if not isinstance(off, int) or isinstance(off, bool) or not 0 <= off < self.size:
            raise InvalidArgument(f"{where!r} is not an offset inside the enclave")
        return self.base + off

    def _run_for(self, tcs_index: int | None, run: uapi.sgx_enclave_run | None) -> uapi.sgx_enclave_run:
        r = self.run if run is None else run
        if not isinstance(r, uapi.sgx_enclave_run):
            raise InvalidArgument(f"run must be a struct sgx_enclave_run, got {type(r).__name__}")
        if tcs_index is not None:
            tcs = self.tcs
            if not isinstance(tcs_index, int) or not 0 <= tcs_index < len(tcs):
                raise InvalidArgument(f"tcs_index {tcs_index!r} out of range (enclave has {len(tcs)} TCSs)")
            r.tcs = tcs[tcs_index]
        return r

    def call(
        self,
        op_addr: int,
        tcs_index: int | None = 0,
        run: uapi.sgx_enclave_run | None = None,
        *,
        function: int = uapi.EENTER,
        rsi: int = 0,
        rdx: int = 0,
        r8: int = 0,
        r9: int = 0,
    ) -> int:
        """``__vdso_sgx_enter_enclave(op_addr, rsi, rdx, function, r8, r9, run)``; the vDSO's return.

        ``tcs_index`` selects ``run.tcs`` among the image's TCSs (None: keep ``run.tcs``, e.g. a
        TCS created at run time). Models: main.c ``ENCL_CALL`` (clobbered and unclobbered
        variants alike: the model has no callee-saved registers to clobber).
        """
        r = self._run_for(tcs_index, run)
        return self.proc.vdso_sgx_enter_enclave(op_addr, rsi, rdx, function, r8, r9, r)

    def call_op(
        self,
        op: ctypes.Structure,
        tcs_index: int | None = 0,
        run: uapi.sgx_enclave_run | None = None,
        *,
        function: int = uapi.EENTER,
    ) -> int:
        """Put ``op`` in the op buffer, :meth:`call` with its address, copy it back into ``op``."""
        if not isinstance(op, ctypes.Structure) or ctypes.sizeof(op) > PAGE_SIZE:
            raise InvalidArgument(f"op must be a ctypes structure of at most a page, got {op!r}")
        self.proc.write(self.op_buffer, bytes(op))
        ret = self.call(self.op_buffer, tcs_index, run, function=function)
        back = self.proc.read(self.op_buffer, ctypes.sizeof(op))
        ctypes.memmove(ctypes.addressof(op), back, len(back))
        return ret

    def close(self) -> None:
        """Unmap the enclave and the op buffer, close the fd (load.c ``encl_delete``)."""
        if self.closed:
            return
        self.closed = True
        self.proc.munmap(self.base, self.size)
        self.proc.munmap(self.op_buffer, PAGE_SIZE)
        self.proc.close(self.fd)


def load_enclave(
    proc: Process,
    image: EnclaveImage,
    *,
    sigstruct: Sigstruct | None = None,
    key: rsa.RSAPrivateKey | None = None,
    provision: bool = False,
    device: str = SGX_ENCLAVE_DEVICE,
) -> Enclave:
    """Open the device, build ``image`` into an enclave, map its segments; the handle.

    The SIGSTRUCT is ``sigstruct`` or, if None, ``sign_enclave(image, key)``. With
    ``provision`` the loader calls SGX_IOC_ENCLAVE_PROVISION (needed for PROVISIONKEY).
    Models: main.c ``setup_test_encl`` (encl_load, encl_measure, encl_build, segment mmaps).
    Outcomes: the :class:`Enclave`; OSError of the first failing system call (everything set up
    so far released).
    """
    if not isinstance(proc, Process):
        raise InvalidArgument(f"proc must be a Process, got {type(proc).__name__}")
    if not isinstance(image, EnclaveImage):
        raise InvalidArgument(f"image must be an EnclaveImage, got {type(image).__name__}")
    if sigstruct is None:
        if key is None:
            raise InvalidArgument("load_enclave needs a sigstruct or a signing key")
        sigstruct = sign_enclave(image, key)
    elif not isinstance(sigstruct, Sigstruct):
        raise InvalidArgument(f"sigstruct must be a Sigstruct, got {type(sigstruct).__name__}")
    fd = proc.open(device, uapi.O_RDWR)
    base: int | None = None
    try:
        for prot in (uapi.PROT_READ, uapi.PROT_EXEC):
            probe = proc.mmap(0, PAGE_SIZE, prot, uapi.MAP_SHARED, fd, 0)
            proc.munmap(probe, PAGE_SIZE)
        base = encl_build(proc, fd, image, sigstruct, provision=provision)
        encl_map_segments(proc, fd, image, base)
        op_buffer = proc.alloc(PAGE_SIZE)
    except BaseException:
        if base is not None:
            proc.munmap(base, image.size)
        proc.close(fd)
        raise
    return Enclave(proc, fd, base, image, sigstruct, op_buffer)

"""Files: ``struct file``, ``struct file_operations``, tmpfs files, and misc devices.

What the SGX drivers need of the VFS: an open file with its operations and private data, the
reference count whose last drop calls ``release``, the tmpfs (shmem) files that hold enclave
backing stores and /dev/shm files, and ``struct miscdevice`` for /dev nodes.

Models: include/linux/fs.h (struct file, struct file_operations, FMODE_*), fs/file_table.c
fput(), mm/shmem.c (shmem_file_setup, shmem_read_mapping_page, shmem_truncate_range),
include/linux/miscdevice.h (struct miscdevice).
Differs: no inodes or dentries; a path names a file; tmpfs exists only under /dev/shm/.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sgxsim.errors import ModelInvariantError
from sgxsim.kernel import uapi as U  # noqa: N812

if TYPE_CHECKING:
    from sgxsim.kernel.main import Kernel
    from sgxsim.kernel.mm import Vma

__all__ = [
    "FMODE_READ",
    "FMODE_WRITE",
    "SHMEM_FOPS",
    "File",
    "FileOperations",
    "MiscDevice",
    "ShmemFile",
]

# fs.h f_mode
FMODE_READ = 0x1
FMODE_WRITE = 0x2


class FileOperations:
    """``struct file_operations``: defaults behave like a missing callback.

    ``open``/``release`` succeed, ``ioctl`` is -ENOTTY (no unlocked_ioctl), ``mmap`` is
    -ENODEV (no ->mmap), ``get_unmapped_area`` returns None (use the mm's default).
    """

    name = "file"

    def open(self, k: Kernel, file: File) -> int:
        return 0

    def release(self, k: Kernel, file: File) -> None:
        return None

    def ioctl(self, k: Kernel, file: File, cmd: int, arg: int) -> int:
        return -U.ENOTTY

    def mmap(self, k: Kernel, file: File, vma: Vma) -> int:
        return -U.ENODEV

    def get_unmapped_area(
        self, k: Kernel, file: File, addr: int, length: int, pgoff: int, flags: int
    ) -> int | None:
        return None


@dataclass(eq=False)
class File:
    """``struct file``: operations, mode, private data, and a reference count."""

    f_op: FileOperations
    path: str
    f_flags: int
    f_mode: int
    private_data: Any = None
    f_count: int = 1
    noexec: bool = False
    shmem: ShmemFile | None = None

    def get_file(self) -> File:
        if self.f_count <= 0:
            raise ModelInvariantError(f"get_file on released file {self.path}")
        self.f_count += 1
        return self

    def fput(self, k: Kernel) -> None:
        """Drop a reference; the last one calls ``f_op.release``. Models: fs/file_table.c fput()."""
        if self.f_count <= 0:
            raise ModelInvariantError(f"fput on released file {self.path}")
        self.f_count -= 1
        if self.f_count == 0:
            self.f_op.release(k, self)
            if self.shmem is not None and self.shmem.anonymous:
                self.shmem.release()


class ShmemFile:
    """A tmpfs (shmem) file: a sparse page cache in DRAM, freed at release or truncation.

    Models: mm/shmem.c shmem_file_setup(), shmem_read_mapping_page() (allocates a zeroed page),
    shmem_truncate_range() (frees pages). Used for enclave backing stores and /dev/shm files.
    """

    def __init__(self, k: Kernel, name: str, size: int, anonymous: bool = True) -> None:
        self.k = k
        self.name = name
        self.size = size
        self.anonymous = anonymous
        self.pages: dict[int, int] = {}

    def get_page(self, index: int) -> int:
        """The physical address of page ``index``, allocating a zero page if absent."""
        phys = self.pages.get(index)
        if phys is None:
            phys = self.k.dram_alloc()
            self.pages[index] = phys
        return phys

    def find_page(self, index: int) -> int | None:
        return self.pages.get(index)

    def truncate_page(self, index: int) -> None:
        phys = self.pages.pop(index, None)
        if phys is not None:
            self.k.dram_free(phys)

    def release(self) -> None:
        for phys in self.pages.values():
            self.k.dram_free(phys)
        self.pages.clear()


class _ShmemFops(FileOperations):
    name = "shmem"

    def mmap(self, k: Kernel, file: File, vma: Vma) -> int:
        return 0


#: The file operations of tmpfs files (stateless).
SHMEM_FOPS = _ShmemFops()


@dataclass(frozen=True)
class MiscDevice:
    """``struct miscdevice``: a /dev node and its file operations."""

    name: str
    fops: FileOperations

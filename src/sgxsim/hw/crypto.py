"""SGX cryptography: MRENCLAVE measurement, key derivation, MACs, paging crypto, SIGSTRUCT RSA.

Facts come from the Intel SDM Vol. 3D: ch. 35 (SIGSTRUCT layout), ch. 39 (the measurement byte
strings of ECREATE/EADD/EEXTEND), ch. 38 (EINIT's check order and q1/q2, EWB/ELDU's AES-GCM,
EREPORT/EGETKEY and their key dependencies). Everything here is a pure function of its arguments or of one
object's own state: no module-level mutable state, no clock, randomness only from an injected
``random.Random``.

* :class:`Measurement` - the SECS's running SHA-256 over 64-byte update blocks (ECREATE, EADD,
  EEXTEND) and its update counter; MRENCLAVE is :meth:`Measurement.finalize`.
* :class:`KeyDependencies` / :func:`derive_key` - [MODEL] of the SDM ``derivekey()``.
* :func:`aes_cmac` - REPORT / EINITTOKEN MACs.
* :func:`ewb_seal` / :func:`eldu_open` - EWB/ELDU page encryption (AES-128-GCM).
* :func:`mrsigner`, :func:`sigstruct_sign`, :func:`sigstruct_verify` - SIGSTRUCT RSA-3072 (e=3).
* :func:`rsa3072_e3_keygen`, :func:`ec_p256_keygen` - deterministic keys from a seeded RNG.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import hmac
import math
import random
import struct
import weakref
from collections.abc import Callable
from typing import Any, ClassVar, Final

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidSignature, InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.cmac import CMAC

from sgxsim.errors import InvalidArgument
from sgxsim.hw.arch import (
    MR_EADD,
    MR_ECREATE,
    MR_EEXTEND,
    PAGE_SIZE,
    SGX_MODULUS_SIZE,
    SIGSTRUCT_EXPONENT,
    SgxStatus,
    Sigstruct,
)

__all__ = [
    "PKCS1_SHA256_PADDING",
    "KeyDependencies",
    "Measurement",
    "aes_cmac",
    "derive_key",
    "ec_p256_keygen",
    "eldu_open",
    "ewb_seal",
    "mrsigner",
    "rsa3072_e3_keygen",
    "sigstruct_sign",
    "sigstruct_verify",
]

_U16: Final = 0xFFFF
_U32: Final = 0xFFFF_FFFF
_BytesLike = bytes | bytearray | memoryview


def _u(value: object, bits: int, what: str) -> int:
    """``value`` as a plain int that fits in ``bits`` unsigned bits, else InvalidArgument."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument(f"{what} must be an int, got {value!r:.60}")
    value = int(value)
    if value < 0 or value >> bits:
        raise InvalidArgument(f"{what}={value:#x} does not fit in {bits} bits")
    return value


def _b(value: object, size: int | None, what: str) -> bytes:
    """``value`` as ``bytes`` (of exactly ``size`` bytes if given), else InvalidArgument."""
    if type(value) is not bytes:
        if not isinstance(value, _BytesLike):
            raise InvalidArgument(f"{what} must be bytes, got {type(value).__name__} {value!r:.60}")
        value = bytes(value)
    if size is not None and len(value) != size:
        raise InvalidArgument(f"{what} must be {size} bytes, got {len(value)}")
    return value


# ============================================================================================
# MRENCLAVE
# ============================================================================================

#: One 64-byte SHA-256 update block each (reference section 5; all integers little-endian).
_ECREATE_BLOCK: Final = struct.Struct("<QIQ44x")  # tag, SSAFRAMESIZE (pages), SIZE
_EADD_BLOCK: Final = struct.Struct("<QQQ40x")  # tag, enclave offset, SECINFO.FLAGS (+40 zero bytes)
_EEXTEND_HEADER: Final = struct.Struct("<QQ48x")  # tag, enclave offset of the 256-byte chunk
_CHUNK: Final = 256
_CHUNKS_PER_PAGE: Final = PAGE_SIZE // _CHUNK  # 16 EEXTENDs measure one page
#: Update blocks of one measured page: its EADD block + 16 x (EEXTEND header + 4 data blocks).
_BLOCKS_PER_MEASURED_PAGE: Final = 1 + _CHUNKS_PER_PAGE * (1 + _CHUNK // 64)
#: The same as 64-bit words: 81 blocks * 8 words = 648 (5184 bytes).
_WORDS_PER_PAGE: Final = _BLOCKS_PER_MEASURED_PAGE * 8
_WORDS_PER_CHUNK: Final = (64 + _CHUNK) // 8  # header + data = 40 words
#: Measured pages hashed per vectorized batch (128 pages = 648 KiB of hash input; 32..512 measured
#: within noise of each other, 128 slightly best: the stream and joined data stay mostly in L2).
_BATCH_PAGES: Final = 512
#: Full batches a measurement hashes inline before it gets its own hashing thread (small
#: enclaves never start one).
_PIPELINE_AFTER: Final = 1
#: Batches in flight on that thread at most (each owns a stream buffer).
_PIPELINE_DEPTH: Final = 2
_CHUNK_OFFSETS: Final = np.arange(0, PAGE_SIZE, _CHUNK, dtype="<u8")
#: One EEXTEND header block followed by its 256 data bytes, as a numpy record (320 bytes).
_CHUNK_RECORD: Final = np.dtype([("header", "V64"), ("data", f"V{_CHUNK}")])
#: EADD blocks hashed per update by :meth:`Measurement.eadd_many` (64 Ki blocks = 4 MiB).
_EADD_ROWS: Final = 1 << 16
_WordArray = npt.NDArray[np.uint64]


class _StreamBuffer:
    """Reusable block stream of ``rows`` measured pages, with the constant words already in place.

    Row ``i`` is page ``i``'s 5184-byte stream: EADD block, then 16 x (EEXTEND header, 256 data
    bytes). ``offsets``/``flags`` are the EADD words, ``chunk_offsets`` the (rows, 16) EEXTEND
    offset words and ``data`` the (rows, 16) 256-byte data slots: strided views into ``words``,
    made once so a batch only writes the variable bytes.
    """

    __slots__ = ("chunk_offsets", "data", "flags", "offsets", "words")

    def __init__(self, rows: int) -> None:
        words: _WordArray = np.zeros((rows, _WORDS_PER_PAGE), dtype="<u8")
        chunks = words[:, 8:].reshape(rows, _CHUNKS_PER_PAGE, _WORDS_PER_CHUNK)
        words[:, 0] = MR_EADD
        chunks[:, :, 0] = MR_EEXTEND
        self.words = words
        self.offsets = words[:, 1]
        self.flags = words[:, 2]
        self.chunk_offsets = chunks[:, :, 1]
        self.data = words.view(np.uint8)[:, 64:].view(_CHUNK_RECORD)["data"]


def _offset_array(offsets: object) -> npt.NDArray[np.integer[Any]]:
    """``offsets`` as a 1-D numpy integer array (u64 range checked for sequences), else InvalidArgument.

    A numpy array must be 1-D with an integer dtype (negative values are left to the caller); any
    other iterable must hold ints (Python or numpy, not bool) in 0..2^64-1.
    """
    if isinstance(offsets, np.ndarray):
        if offsets.ndim != 1 or (offsets.size and offsets.dtype.kind not in "iu"):
            raise InvalidArgument(
                f"offsets must be a 1-D integer array, got {offsets.dtype} shape {offsets.shape}"
            )
        return offsets
    if isinstance(offsets, str | bytes | bytearray | memoryview):
        raise InvalidArgument(f"offsets must be a sequence of integers, got {offsets!r:.60}")
    try:
        values = list(offsets)  # type: ignore[call-overload]
    except TypeError:
        raise InvalidArgument(f"offsets must be a sequence of integers, got {offsets!r:.60}") from None
    for value in values:
        if not isinstance(value, int | np.integer) or isinstance(value, bool | np.bool_):
            raise InvalidArgument(f"offsets must be integers, got {value!r:.60}")
        if not 0 <= value <= 0xFFFF_FFFF_FFFF_FFFF:
            raise InvalidArgument(f"EADD offset {int(value):#x} does not fit in 64 bits")
    return np.array(values, dtype="<u8")


class _ECreate:
    """``Measurement.ecreate``: on the class, makes a new measurement; on an instance, re-initializes it.

    Both spellings are in use (``Measurement.ecreate(ssa, size)`` by the image builder, ``m.ecreate``
    on the SECS's measurement by the ECREATE leaf); both return the measurement.
    """

    def __get__(
        self, obj: Measurement | None, objtype: type[Measurement] | None = None
    ) -> Callable[[int, int], Measurement]:
        if obj is None:
            cls = Measurement if objtype is None else objtype
            return lambda ssa_frame_pages, size: cls()._ecreate(ssa_frame_pages, size)
        return obj._ecreate


class Measurement:
    """The running MRENCLAVE of one enclave: SHA-256 over 64-byte update blocks plus a block counter.

    Models: SDM ECREATE/EADD/EEXTEND "SHA256UPDATE(MRENCLAVE, TMPUPDATEFIELD)" and
    "INC enclave's MRENCLAVE update counter", EINIT "SHA256FINAL"; kernel selftest
    ``sigstruct.c`` ``encl_measure``; Gramine ``sgx_sign.py``; Intel ``enclave_creator_sign.cpp``.
    The result equals all three signers' MRENCLAVE (checked against ``tests/vectors/mrenclave.json``).

    Block layouts: ECREATE = tag ``"ECREATE\\0"`` | SSAFRAMESIZE u32 | SIZE u64 | 44 zero bytes;
    EADD = ``"EADD\\0\\0\\0\\0"`` | offset u64 | SECINFO.FLAGS u64 | 40 zero bytes; EEXTEND =
    ``"EEXTEND\\0"`` | offset u64 | 48 zero bytes, then the 256 measured bytes as four blocks.
    Offsets are enclave offsets (``LINADDR - SECS.BASEADDR``). The caller passes the SECINFO flags
    as EADD hashes them (for a TCS, with R/W/X already forced to 0).

    ``update_count`` counts 64-byte blocks (ECREATE 1, EADD 1, EEXTEND 5), as the SDM's counter
    (EINIT finalizes with a message length of ``update_count * 512`` bits).

    Differs: CET parts put CET_LEG_BITMAP_OFFSET in ECREATE block bytes 20..27; not modelled (the
    Linux driver does not support CET enclaves), those bytes are always 0.

    :meth:`page` is the fast path for a whole EADD (+16 EEXTENDs); :meth:`eadd_many` hashes the
    EADD blocks of many unmeasured pages at once. Measured pages are queued and hashed in
    vectorized batches of 512 pages; from the second full batch on, a measurement hashes its
    batches on its own single worker thread (in order; hashlib releases the GIL) while Python
    builds the next one. Every other operation, :meth:`copy` and :meth:`finalize` flush the queue
    and wait for that thread first, so the observable state is always that of the block-by-block
    sequence, and the digest never depends on timing.
    """

    __slots__ = ("__weakref__", "_batches", "_count", "_exec", "_free", "_hash", "_inflight", "_pending")

    ecreate: ClassVar[_ECreate] = _ECreate()

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._count = 0
        #: Measured pages not hashed yet: (offset, flags, data) in EADD order.
        self._pending: list[tuple[int, int, bytes]] = []
        #: Full-batch stream buffers not in use (reused until :meth:`finalize` drops them).
        self._free: list[_StreamBuffer] = []
        #: Full batches hashed so far; past _PIPELINE_AFTER they go to a hashing thread.
        self._batches = 0
        #: The hashing thread (one worker: updates stay in submission order) and the batches
        #: it has not finished, oldest first. hashlib releases the GIL while it hashes, so
        #: Python builds batch k + 1 while batch k is hashed; every other use of ``_hash``
        #: waits for them first (:meth:`_sync`), so the state is always the sequential one.
        self._exec: concurrent.futures.ThreadPoolExecutor | None = None
        self._inflight: list[tuple[concurrent.futures.Future[None], _StreamBuffer]] = []

    # ---------------------------------------------------------------- leaves
    def _ecreate(self, ssa_frame_pages: int, size: int) -> Measurement:
        """ECREATE: re-initialize the hash and hash the ECREATE block; returns ``self``.

        Models: SDM ECREATE ("SHA256INITIALIZE", update counter initialized, ECREATE block).
        """
        ssa = _u(ssa_frame_pages, 32, "ECREATE ssa_frame_pages")
        sz = _u(size, 64, "ECREATE size")
        self._sync()
        self._pending.clear()
        self._hash = hashlib.sha256(_ECREATE_BLOCK.pack(MR_ECREATE, ssa, sz))
        self._count = 1
        return self

    def eadd(self, offset: int, secinfo_flags: int) -> None:
        """EADD: hash one EADD block for the page at enclave ``offset`` (4 KiB aligned).

        Models: SDM EADD ("EADD" | ENCLAVEOFFSET | SECINFO[375:0]).
        """
        off = _u(offset, 64, "EADD offset")
        if off & (PAGE_SIZE - 1):
            raise InvalidArgument(f"EADD offset {off:#x} is not 4 KiB aligned")
        flags = _u(secinfo_flags, 64, "EADD secinfo_flags")
        if self._pending:
            self._flush()
        if self._inflight:
            self._sync()
        self._hash.update(_EADD_BLOCK.pack(MR_EADD, off, flags))
        self._count += 1

    def eextend(self, offset: int, chunk256: bytes) -> None:
        """EEXTEND: hash the header block and the 256 bytes at enclave ``offset`` (256-byte aligned).

        Models: SDM EEXTEND ("EEXTEND" | ENCLAVEOFFSET | 0, then 4 x 64 data bytes; counter += 5).
        """
        off = _u(offset, 64, "EEXTEND offset")
        if off & (_CHUNK - 1):
            raise InvalidArgument(f"EEXTEND offset {off:#x} is not 256-byte aligned")
        data = _b(chunk256, _CHUNK, "EEXTEND chunk")
        if self._pending:
            self._flush()
        if self._inflight:
            self._sync()
        self._hash.update(_EEXTEND_HEADER.pack(MR_EEXTEND, off) + data)
        self._count += 5

    def eadd_many(self, offsets: npt.ArrayLike, secinfo_flags: int) -> None:
        """EADD blocks for many unmeasured pages with one SECINFO: one update of the running hash.

        Equal to ``eadd(off, secinfo_flags)`` for each ``off`` of ``offsets`` in order (same
        digest, ``update_count`` + ``len(offsets)``); any queued measured pages are hashed first.
        ``offsets`` is a 1-D numpy integer array or a sequence of ints (enclave offsets, 4 KiB
        aligned, in u64); empty is a no-op. All values are checked before anything is hashed: a
        misaligned, negative or >= 2^64 offset, non-integer or non-1-D ``offsets`` or
        ``secinfo_flags`` outside u64 raise InvalidArgument and leave the measurement unchanged.
        Models: SDM EADD ("EADD" | ENCLAVEOFFSET | SECINFO[375:0]), repeated (Linux
        sgx_encl_add_page without SGX_PAGE_MEASURE, page after page).
        """
        flags = _u(secinfo_flags, 64, "EADD secinfo_flags")
        arr = _offset_array(offsets)
        if not arr.size:
            return
        bad = (arr & (PAGE_SIZE - 1)) != 0
        if arr.dtype.kind == "i":
            bad |= arr < 0
        if bad.any():
            raise InvalidArgument(
                f"EADD offset {int(arr[int(np.argmax(bad))]):#x} is negative or not 4 KiB aligned"
            )
        if self._pending:
            self._flush()
        if self._inflight:
            self._sync()
        update = self._hash.update
        for start in range(0, arr.size, _EADD_ROWS):
            part = arr[start : start + _EADD_ROWS]
            rows: _WordArray = np.zeros((part.size, 8), dtype="<u8")
            rows[:, 0] = MR_EADD
            rows[:, 1] = part
            rows[:, 2] = flags
            update(rows.data)
        self._count += int(arr.size)

    def page(self, offset: int, flags: int, data4k: bytes, measured: bool) -> None:
        """One EADD of the page at ``offset`` and, if ``measured``, its 16 EEXTENDs.

        Equal to ``eadd(offset, flags)`` then ``eextend(offset + 256*i, data4k[256*i:][:256])``
        for i in 0..15 when measured. Raises InvalidArgument for a misaligned/out-of-range offset,
        flags outside u64, or data that is not 4096 bytes.
        """
        # Fast path: cheap checks for the common valid call (literals, no global lookups, no
        # negative masks). ``offset & 0xFFF or offset >> 64`` is non-zero for a misaligned,
        # negative or >= 2^64 offset, ``flags >> 64`` for negative or >= 2^64 flags; a non-int
        # offset/flags raises here and the slow path names the problem.
        try:
            bad = (
                type(data4k) is not bytes
                or len(data4k) != 4096
                or offset & 0xFFF
                or offset >> 64
                or flags >> 64
            )
        except Exception:
            bad = True
        if bad:
            offset, flags, data4k = self._check_page(offset, flags, data4k)
        if measured is True:
            pending = self._pending
            pending.append((offset, flags, data4k))
            if len(pending) >= 512:  # _BATCH_PAGES
                self._flush()
        elif measured is False:
            if self._pending:
                self._flush()
            if self._inflight:
                self._sync()
            self._hash.update(_EADD_BLOCK.pack(MR_EADD, offset, flags))
            self._count += 1
        else:
            raise InvalidArgument(f"page measured must be a bool, got {measured!r:.60}")

    @staticmethod
    def _check_page(offset: object, flags: object, data4k: object) -> tuple[int, int, bytes]:
        off = _u(offset, 64, "page offset")
        if off & (PAGE_SIZE - 1):
            raise InvalidArgument(f"page offset {off:#x} is not 4 KiB aligned")
        fl = _u(flags, 64, "page secinfo flags")
        return off, fl, _b(data4k, PAGE_SIZE, f"page data at offset {off:#x}")

    def _flush(self) -> None:
        """Hash the queued measured pages: write their block streams side by side, one update.

        The stream buffer is reused (only offsets, flags and data are written); the pages' data
        is joined once and scattered with one strided copy, each 256-byte chunk right after its
        EEXTEND header; the hash reads the buffer's rows in place (C-contiguous page streams).
        """
        pending = self._pending
        n = len(pending)
        offsets_list, flags_list, data_list = zip(*pending, strict=True)
        full = n == _BATCH_PAGES
        if not full:
            buf = _StreamBuffer(n)
        elif self._free:
            buf = self._free.pop()
        elif len(self._inflight) >= _PIPELINE_DEPTH:
            fut, buf = self._inflight.pop(0)
            fut.result()
        else:
            buf = _StreamBuffer(_BATCH_PAGES)
        offsets = np.array(offsets_list, dtype="<u8")
        buf.offsets[:n] = offsets
        np.add(offsets[:, None], _CHUNK_OFFSETS, out=buf.chunk_offsets[:n])
        first = flags_list[0]
        buf.flags[:n] = first if flags_list.count(first) == n else np.array(flags_list, dtype="<u8")
        buf.data[:n] = np.frombuffer(b"".join(data_list), dtype=f"V{_CHUNK}").reshape(n, _CHUNKS_PER_PAGE)
        self._count += n * _BLOCKS_PER_MEASURED_PAGE
        pending.clear()
        if not full:
            if self._inflight:
                self._sync()
            self._hash.update(buf.words[:n].data)
            return
        self._batches += 1
        if self._batches <= _PIPELINE_AFTER:
            self._hash.update(buf.words[:n].data)
            self._free.append(buf)
            return
        if self._exec is None:
            self._exec = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mrenclave")
            weakref.finalize(self, self._exec.shutdown, False)
        self._inflight.append((self._exec.submit(self._hash.update, buf.words[:n].data), buf))

    def _sync(self) -> None:
        """Wait until the hashing thread has applied every submitted batch (in order)."""
        for fut, buf in self._inflight:
            fut.result()
            self._free.append(buf)
        self._inflight.clear()

    # ---------------------------------------------------------------- state
    @property
    def update_count(self) -> int:
        """Number of 64-byte blocks hashed so far (the SDM's MRENCLAVE update counter)."""
        return self._count + len(self._pending) * _BLOCKS_PER_MEASURED_PAGE

    def copy(self) -> Measurement:
        """An independent measurement with the same state (e.g. to peek at MRENCLAVE mid-build)."""
        if self._pending:
            self._flush()
        self._sync()
        twin = Measurement()
        twin._hash = self._hash.copy()
        twin._count = self._count
        return twin

    def finalize(self) -> bytes:
        """MRENCLAVE: the SHA-256 digest (32 bytes) of every block so far.

        Models: SDM EINIT "SHA256FINAL(TMP_SECS.MRENCLAVE, update counter * 512)". Does not
        consume the measurement; later updates continue from the same running state.
        """
        if self._pending:
            self._flush()
        self._sync()
        self._free = []
        if self._exec is not None:
            self._exec.shutdown()
            self._exec = None
        return self._hash.digest()


# ============================================================================================
# Key derivation [MODEL]
# ============================================================================================

#: DER DigestInfo prefix of a SHA-256 hash (RFC 8017 section 9.2, note 1).
_SHA256_DIGESTINFO: Final = bytes.fromhex("3031300d060960864801650304020105000420")

#: The upper 352 bytes of a valid SIGSTRUCT's PKCS#1 v1.5 encoded message (EM without the hash):
#: ``00 01 FF*330 00`` + DigestInfo(SHA-256). EINIT keeps them as SECS.PADDING; EGETKEY's
#: HARDCODED_PKCS1_5_PADDING (SDM EGETKEY) is the same byte string.
PKCS1_SHA256_PADDING: Final = b"\x00\x01" + b"\xff" * 330 + b"\x00" + _SHA256_DIGESTINFO

_KEYDEP_TAG: Final = b"sgxsim/KEYDEPENDENCIES/v1\x00"
#: keyname, isvprodid, isvsvn, ownerepoch, attributes, attributemask, mrenclave, mrsigner, keyid,
#: seal_fuses, cpusvn, padding, miscselect, miscmask, keypolicy, configid, configsvn,
#: isvextprodid, isvfamilyid.
_KEYDEP_STRUCT: Final = struct.Struct("<HHH16s16s16s32s32s32s16s16s352sIIH64sH16s16s")
#: (field, bits) for integers / (field, bytes) for byte strings, in serialization order.
_KEYDEP_FIELDS: Final = (
    ("keyname", 16, False),
    ("isvprodid", 16, False),
    ("isvsvn", 16, False),
    ("ownerepoch", 16, True),
    ("attributes", 16, True),
    ("attributemask", 16, True),
    ("mrenclave", 32, True),
    ("mrsigner", 32, True),
    ("keyid", 32, True),
    ("seal_fuses", 16, True),
    ("cpusvn", 16, True),
    ("padding", 352, True),
    ("miscselect", 32, False),
    ("miscmask", 32, False),
    ("keypolicy", 16, False),
    ("configid", 64, True),
    ("configsvn", 16, False),
    ("isvextprodid", 16, True),
    ("isvfamilyid", 16, True),
)


@dataclasses.dataclass(frozen=True, slots=True)
class KeyDependencies:
    """The SDM's TMP_KEYDEPENDENCIES: every value a derived key is bound to.

    Models: SDM EGETKEY / EREPORT / EINIT key derivation (TMP_KEYDEPENDENCIES.* assignments).
    The leaf fills the fields per key name (e.g. MISCMASK = ~KEYREQUEST.MISCMASK for SEAL, zero
    for REPORT); this class only carries them. ``attributes``/``attributemask`` are the 16-byte
    ATTRIBUTES values (flags u64 | xfrm u64, little-endian) after the leaf's masking; ``padding`` is
    SECS.PADDING or HARDCODED_PKCS1_5_PADDING (352 bytes, default :data:`PKCS1_SHA256_PADDING`).
    ``keypolicy`` is part of the SDM structure too (zero for non-SEAL keys).
    Integers must fit their SDM width; byte fields must have their SDM length (InvalidArgument).
    """

    keyname: int
    isvprodid: int = 0
    isvsvn: int = 0
    ownerepoch: bytes = bytes(16)
    attributes: bytes = bytes(16)
    attributemask: bytes = bytes(16)
    mrenclave: bytes = bytes(32)
    mrsigner: bytes = bytes(32)
    keyid: bytes = bytes(32)
    seal_fuses: bytes = bytes(16)
    cpusvn: bytes = bytes(16)
    padding: bytes = PKCS1_SHA256_PADDING
    miscselect: int = 0
    miscmask: int = 0
    keypolicy: int = 0
    configid: bytes = bytes(64)
    configsvn: int = 0
    isvextprodid: bytes = bytes(16)
    isvfamilyid: bytes = bytes(16)

    def __post_init__(self) -> None:
        for name, width, is_bytes in _KEYDEP_FIELDS:
            value = getattr(self, name)
            what = f"KeyDependencies.{name}"
            checked: Any = _b(value, width, what) if is_bytes else _u(value, width, what)
            if checked is not value or type(value) is not type(checked):
                object.__setattr__(self, name, checked)

    def canonical_bytes(self) -> bytes:
        """The fixed-layout serialization :func:`derive_key` MACs (a tag, then every field)."""
        return _KEYDEP_TAG + _KEYDEP_STRUCT.pack(*(getattr(self, name) for name, _, _ in _KEYDEP_FIELDS))


def derive_key(secret: bytes, deps: KeyDependencies) -> bytes:
    """A 128-bit key bound to ``deps`` under a per-machine fused ``secret``.

    Models: [MODEL] SDM ``derivekey(TMP_KEYDEPENDENCIES)`` (EGETKEY, EREPORT, EINIT token key).
    Differs: the SDM's derivation (AES-CMAC with fused root keys) is not public; this is the first 16
    bytes of HMAC-SHA256(secret, :meth:`KeyDependencies.canonical_bytes`). Only key *equality* is
    observable to software (same secret and dependencies give the same key, any change gives a
    different one), and that is what this preserves.
    """
    key = _b(secret, None, "derive_key secret")
    if not key:
        raise InvalidArgument("derive_key secret must not be empty")
    if not isinstance(deps, KeyDependencies):
        raise InvalidArgument(f"derive_key needs KeyDependencies, got {type(deps).__name__}")
    return hmac.new(key, deps.canonical_bytes(), hashlib.sha256).digest()[:16]


# ============================================================================================
# MACs and paging crypto
# ============================================================================================


def aes_cmac(key: bytes, data: bytes) -> bytes:
    """AES-128-CMAC of ``data`` (16 bytes): REPORT.MAC, EINITTOKEN.MAC.

    Models: SDM EREPORT ``cmac(TMP_REPORTKEY, TMP_REPORT[3071:0])``; RFC 4493.
    """
    k = _b(key, 16, "aes_cmac key")
    mac = CMAC(algorithms.AES(k))
    mac.update(_b(data, None, "aes_cmac data"))
    return mac.finalize()


def _paging_args(paging_key: object, version: object, header: object) -> tuple[AESGCM, bytes, bytes]:
    key = _b(paging_key, 16, "paging key")
    ver = _u(version, 64, "paging version")
    aad = _b(header, None, "paging header")
    # The SDM's 96-bit IV is TMP_VER << 32: low 32 bits zero, version above (little-endian bytes).
    return AESGCM(key), (ver << 32).to_bytes(12, "little"), aad


def ewb_seal(paging_key: bytes, version: int, header: bytes, page: bytes) -> tuple[bytes, bytes]:
    """Encrypt an evicted page: ``(ciphertext 4096 bytes, MAC 16 bytes)``.

    Models: SDM EWB ``{SRCPGE, PCMD.MAC} = AES_GCM_ENC(CR_BASE_PK, TMP_VER << 32, TMP_HEADER, page)``.
    ``header`` is the authenticated (not encrypted) metadata the caller built (SECINFO, LINADDR,
    EID...); binding it here means ELDU with any other header or version fails.
    Differs: the IV byte order (12 little-endian bytes of ``version << 32``) is [MODEL]; only
    round-trip behaviour is observable.
    """
    gcm, nonce, aad = _paging_args(paging_key, version, header)
    plain = _b(page, PAGE_SIZE, "EWB page")
    sealed = gcm.encrypt(nonce, plain, aad)
    return sealed[:PAGE_SIZE], sealed[PAGE_SIZE:]


def eldu_open(paging_key: bytes, version: int, header: bytes, ciphertext: bytes, mac: bytes) -> bytes | None:
    """Decrypt and authenticate an evicted page; ``None`` if the MAC does not verify.

    Models: SDM ELDU/ELDB ``AES_GCM_DEC`` + MAC compare. Outcomes: the 4096 plaintext bytes, or
    ``None`` (wrong key, version, header, ciphertext or MAC), which the leaf reports as
    ``SGX_MAC_COMPARE_FAIL``.
    """
    gcm, nonce, aad = _paging_args(paging_key, version, header)
    ct = _b(ciphertext, PAGE_SIZE, "ELDU ciphertext")
    tag = _b(mac, 16, "ELDU mac")
    try:
        return gcm.decrypt(nonce, ct + tag, aad)
    except InvalidTag:
        return None


# ============================================================================================
# SIGSTRUCT
# ============================================================================================

_RSA_BITS: Final = SGX_MODULUS_SIZE * 8


def mrsigner(modulus_le: bytes) -> bytes:
    """MRSIGNER: SHA-256 of SIGSTRUCT.MODULUS as stored (384 little-endian bytes).

    Models: SDM EINIT "TMP_MRSIGNER := SHA256(TMP_SIG.MODULUS)".
    """
    return hashlib.sha256(_b(modulus_le, SGX_MODULUS_SIZE, "mrsigner modulus")).digest()


def _encoded_message(signed_data: bytes) -> int:
    """EMSA-PKCS1-v1_5 (SHA-256) of the 256 signed SIGSTRUCT bytes, as a 3072-bit integer."""
    return int.from_bytes(PKCS1_SHA256_PADDING + hashlib.sha256(signed_data).digest(), "big")


def sigstruct_sign(sig: Sigstruct, key: rsa.RSAPrivateKey) -> Sigstruct:
    """``sig`` signed with ``key``: MODULUS, EXPONENT=3, SIGNATURE, Q1 and Q2 filled in.

    Models: kernel selftest ``sigstruct.c`` ``encl_measure``/``calc_q1q2``; Gramine ``sigstruct.py``.
    The signature is RSASSA-PKCS1-v1_5 with SHA-256 over :meth:`Sigstruct.signed_data`;
    q1 = floor(s^2 / n), q2 = floor((s^3 - q1*s*n) / n); modulus, signature, q1, q2 are stored as
    384-byte little-endian integers. Raises InvalidArgument unless ``key`` is RSA-3072 with e = 3.
    """
    if not isinstance(sig, Sigstruct):
        raise InvalidArgument(f"sigstruct_sign needs a Sigstruct, got {type(sig).__name__}")
    if not isinstance(key, rsa.RSAPrivateKey):
        raise InvalidArgument(f"sigstruct_sign needs an RSA private key, got {type(key).__name__}")
    public = key.public_key().public_numbers()
    if key.key_size != _RSA_BITS or public.e != SIGSTRUCT_EXPONENT:
        raise InvalidArgument(
            f"SIGSTRUCT keys are RSA-{_RSA_BITS} with e={SIGSTRUCT_EXPONENT}, "
            f"got RSA-{key.key_size} e={public.e}"
        )
    n = public.n
    s = int.from_bytes(key.sign(sig.signed_data(), padding.PKCS1v15(), hashes.SHA256()), "big")
    q1 = s * s // n
    q2 = s * (s * s - q1 * n) // n

    def le(x: int) -> bytes:
        return x.to_bytes(SGX_MODULUS_SIZE, "little")

    return dataclasses.replace(
        sig, modulus=le(n), exponent=SIGSTRUCT_EXPONENT, signature=le(s), q1=le(q1), q2=le(q2)
    )


def sigstruct_verify(sig: Sigstruct) -> SgxStatus:
    """EINIT's SIGSTRUCT checks, in EINIT's order.

    Models: SDM EINIT (reference 4.4 steps 1-2). Outcomes:

    * ``SGX_INVALID_SIG_STRUCT``: HEADER1, VENDOR (0 or 0x8086), HEADER2 or EXPONENT (3) wrong, or
      a reserved field (reserved1/2/3/4) non-zero;
    * ``SGX_INVALID_SIGNATURE``: the RSA signature over :meth:`Sigstruct.signed_data` does not
      verify with the embedded modulus (PKCS#1 v1.5, SHA-256), the signature is not below the
      modulus, or Q1/Q2 are not floor(s^2/n) and floor((s^3 - q1*s*n)/n);
    * ``SUCCESS``.

    Never raises for bad bytes; raises InvalidArgument only if ``sig`` is not a Sigstruct.
    Differs: the pending-interrupt check (SGX_UNMASKED_EVENT) between the two steps belongs to the
    leaf, not to this function.
    """
    if not isinstance(sig, Sigstruct):
        raise InvalidArgument(f"sigstruct_verify needs a Sigstruct, got {type(sig).__name__}")
    if not (sig.header_ok() and sig.reserved_ok()):
        return SgxStatus.SGX_INVALID_SIG_STRUCT
    n = sig.modulus_int
    s = sig.signature_int
    if n < 2 or s >= n:
        return SgxStatus.SGX_INVALID_SIGNATURE
    # The hardware computes s^3 mod n as ((s*s - q1*n) * s - q2*n), trusting q1/q2 only as far as
    # both remainders land in [0, n); that is exactly q1/q2 being the floor quotients.
    r1 = s * s - int.from_bytes(sig.q1, "little") * n
    if not 0 <= r1 < n:
        return SgxStatus.SGX_INVALID_SIGNATURE
    r2 = r1 * s - int.from_bytes(sig.q2, "little") * n
    if not 0 <= r2 < n:
        return SgxStatus.SGX_INVALID_SIGNATURE
    if r2 != _encoded_message(sig.signed_data()):
        return SgxStatus.SGX_INVALID_SIGNATURE
    return SgxStatus.SUCCESS


# ============================================================================================
# Deterministic keys
# ============================================================================================

_PRIME_BITS: Final = _RSA_BITS // 2
#: Candidates per sieve window (step 6); a 1536-bit prime is expected every ~355 of them.
_SIEVE_WINDOW: Final = 4096
_SIEVE_LIMIT: Final = 1 << 17
#: Fixed Miller-Rabin bases: FIPS 186-5 table B.1 asks for 4 rounds for 1536-bit RSA primes.
_MR_BASES: Final = (2, 3, 5, 7)
_P256_ORDER: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_SCREEN_MESSAGE: Final = b"sgxsim/fermat-screen"
_SCREEN_BYTES: Final = _PRIME_BITS // 8
_SCREEN_EM: Final = int.from_bytes(
    b"\x00\x01"
    + b"\xff" * (_SCREEN_BYTES - 3 - len(_SHA256_DIGESTINFO) - 32)
    + b"\x00"
    + _SHA256_DIGESTINFO
    + hashlib.sha256(_SCREEN_MESSAGE).digest(),
    "big",
)


def _sieve_primes(limit: int) -> tuple[tuple[int, int], ...]:
    """``(r, 6^-1 mod r)`` for every prime 5 <= r < limit (the sieve's moduli)."""
    flags = bytearray(b"\x01") * limit
    flags[0:2] = b"\x00\x00"
    for i in range(2, math.isqrt(limit) + 1):
        if flags[i]:
            flags[i * i :: i] = bytes(len(range(i * i, limit, i)))
    return tuple((r, pow(6, -1, r)) for r in range(5, limit) if flags[r])


_SIEVE_PRIMES: Final = _sieve_primes(_SIEVE_LIMIT)


def _miller_rabin(n: int) -> bool:
    """Miller-Rabin with the fixed bases :data:`_MR_BASES` (n odd, n > 11)."""
    d = n - 1
    s = (d & -d).bit_length() - 1
    d >>= s
    for a in _MR_BASES:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def _fermat_screen(n: int) -> bool:
    """Fast compositeness screen: False means ``n`` is certainly composite.

    A Fermat test computed by OpenSSL instead of Python's ``pow`` (about 6x faster here): with
    s = EM^-1 mod n, a prime n has s^(n-2) = s^-1 = EM (mod n), which is exactly what an RSA
    PKCS#1 v1.5 verification with modulus n and public exponent n-2 checks for the message whose
    encoding is EM. A composite passes only if it is a Fermat pseudoprime to base s. Every prime
    passes, and survivors still go through :func:`_miller_rabin`, so the screen changes speed,
    never which prime is found (if the backend refuses the key it answers "maybe prime").
    """
    try:
        s = pow(_SCREEN_EM, -1, n)
    except ValueError:  # EM shares a factor with n
        return False
    try:
        public = rsa.RSAPublicNumbers(n - 2, n).public_key()
        public.verify(s.to_bytes(_SCREEN_BYTES, "big"), _SCREEN_MESSAGE, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    except (ValueError, UnsupportedAlgorithm):  # backend limits on the exponent: no opinion
        return True
    return True


def _prime_for_e3(rng: random.Random) -> int:
    """A 1536-bit probable prime p with the top two bits set and p % 3 == 2 (so gcd(3, p-1) = 1).

    Candidates are start + 6k from a random start = 5 (mod 6); a window of them is sieved by every
    prime below 2^17, and the survivors are tried in order: Fermat screen, then Miller-Rabin.
    """
    while True:
        start = rng.getrandbits(_PRIME_BITS) | (3 << (_PRIME_BITS - 2))
        start += 5 - start % 6
        if (start + 6 * _SIEVE_WINDOW).bit_length() != _PRIME_BITS:
            continue
        alive = bytearray(b"\x01") * _SIEVE_WINDOW
        for r, inv6 in _SIEVE_PRIMES:
            k = (-(start % r) * inv6) % r  # start + 6k = 0 (mod r)
            if k < _SIEVE_WINDOW:
                alive[k::r] = bytes(len(range(k, _SIEVE_WINDOW, r)))
        k = alive.find(1)
        while k >= 0:
            candidate = start + 6 * k
            if _fermat_screen(candidate) and _miller_rabin(candidate):
                return candidate
            k = alive.find(1, k + 1)


def _check_rng(rng: object, what: str) -> random.Random:
    if not isinstance(rng, random.Random):
        raise InvalidArgument(f"{what} needs a random.Random stream, got {type(rng).__name__}")
    return rng


def rsa3072_e3_keygen(rng: random.Random) -> rsa.RSAPrivateKey:
    """A deterministic RSA-3072 key with public exponent 3: same RNG state, same key.

    Models: the SIGSTRUCT key requirements (SDM: 3072-bit modulus, exponent 3). Two independent
    1536-bit primes from :func:`_prime_for_e3`; d = 3^-1 mod lcm(p-1, q-1); CRT values from
    ``cryptography``'s ``rsa_crt_*`` helpers.
    """
    stream = _check_rng(rng, "rsa3072_e3_keygen")
    p = _prime_for_e3(stream)
    q = _prime_for_e3(stream)
    while q == p:
        q = _prime_for_e3(stream)
    if p < q:
        p, q = q, p
    n = p * q
    d = pow(SIGSTRUCT_EXPONENT, -1, math.lcm(p - 1, q - 1))
    numbers = rsa.RSAPrivateNumbers(
        p=p,
        q=q,
        d=d,
        dmp1=rsa.rsa_crt_dmp1(d, p),
        dmq1=rsa.rsa_crt_dmq1(d, q),
        iqmp=rsa.rsa_crt_iqmp(p, q),
        public_numbers=rsa.RSAPublicNumbers(SIGSTRUCT_EXPONENT, n),
    )
    # Built from verified parts; OpenSSL's full key check (primality again) costs ~0.1 s.
    return numbers.private_key(unsafe_skip_rsa_key_validation=True)


def ec_p256_keygen(rng: random.Random) -> ec.EllipticCurvePrivateKey:
    """A deterministic ECDSA P-256 key: the scalar is uniform in [1, n-1] from ``rng``.

    Models: nothing architectural; the deterministic stand-in for the P-256 keys of the platform
    enclaves and the attestation PKI (same RNG state, same key).
    """
    stream = _check_rng(rng, "ec_p256_keygen")
    return ec.derive_private_key(stream.randrange(1, _P256_ORDER), ec.SECP256R1())

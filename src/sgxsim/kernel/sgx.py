"""The SGX core's shared definitions: what ``arch/x86/kernel/cpu/sgx/sgx.h`` gives every .c file.

The ``SGX_NR_*`` reclaimer constants, the ``struct sgx_epc_page`` flag bits, what a page's
``owner`` points to (:class:`EpcOwner`), the ``list`` member every EPC page has
(:class:`PageLists`, an intrusive list over page indices), and ``struct sgx_numa_node`` /
``struct sgx_epc_section``. Every kernel module imports these from here at the top of the file,
as every driver .c file includes sgx.h, so no module needs another's code to get a constant.

Models: arch/x86/kernel/cpu/sgx/sgx.h (Linux 6.x mainline), plus the RFC v2 EUPDATESVN series'
flag bits (patches 04 and 06) and two [MODEL] bits (poison, leaked).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sgxsim.errors import ModelInvariantError
from sgxsim.hw.arch import PAGE_SHIFT
from sgxsim.kernel.locking import SpinLock

__all__ = [
    "SGX_EPC_PAGE_GUEST",
    "SGX_EPC_PAGE_IN_RELEASE",
    "SGX_EPC_PAGE_IS_FREE",
    "SGX_EPC_PAGE_LEAKED",
    "SGX_EPC_PAGE_POISON",
    "SGX_EPC_PAGE_RECLAIMER_TRACKED",
    "SGX_EPC_PAGE_VA",
    "SGX_EPC_PAGE_ZAP_TRACKED",
    "SGX_NR_HIGH_PAGES",
    "SGX_NR_LOW_PAGES",
    "SGX_NR_TO_SCAN",
    "EpcOwner",
    "PageLists",
    "SgxEpcSection",
    "SgxNumaNode",
]

#: Pages the reclaimer isolates per batch (sgx.h).
SGX_NR_TO_SCAN = 16
#: Below this many free pages an allocation wakes ksgxd (sgx.h).
SGX_NR_LOW_PAGES = 32
#: ksgxd reclaims until this many pages are free (sgx.h).
SGX_NR_HIGH_PAGES = 64

#: ``struct sgx_epc_page.flags`` (sgx.h).
SGX_EPC_PAGE_RECLAIMER_TRACKED = 1 << 0
SGX_EPC_PAGE_IS_FREE = 1 << 1
#: RFC v2 patch 04: a VA page / a KVM guest (vEPC) page.
SGX_EPC_PAGE_VA = 1 << 2
SGX_EPC_PAGE_GUEST = 1 << 3
#: RFC v2 patch 06: a SECS the zapper deferred to its second pass; a VA/SECS page of an enclave
#: in release that the zapper waits for.
SGX_EPC_PAGE_ZAP_TRACKED = 1 << 4
SGX_EPC_PAGE_IN_RELEASE = 1 << 5
#: [MODEL] ``struct sgx_epc_page.poison`` kept as a flag bit.
SGX_EPC_PAGE_POISON = 1 << 6
#: [MODEL] The page was leaked: EREMOVE failed in sgx_encl_free_epc_page (Linux WARNs and
#: never returns it); kept so that accounting can name it.
SGX_EPC_PAGE_LEAKED = 1 << 7


class EpcOwner(enum.IntEnum):
    """What ``struct sgx_epc_page.owner`` points to.

    ``epc_owner_id`` is the enclave id (``SgxEncl.id``) for ENCL_PAGE, SECS and VA_PAGE and the
    vEPC id for VEPC; ``epc_owner_index`` is the page's PFN (``desc >> PAGE_SHIFT``) for
    ENCL_PAGE, the VA page id for VA_PAGE and the page offset (pgoff) for VEPC.
    """

    NONE = 0
    ENCL_PAGE = 1
    SECS = 2
    VA_PAGE = 3
    VEPC = 4


# ---------------------------------------------------------------------------------------
# Intrusive lists over EPC page indices


class PageLists:
    """``struct list_head`` for every EPC page, plus list heads, as two index arrays.

    Slot ``i < npages`` is EPC page ``i``'s ``list`` member; slots ``npages + h`` are list heads.
    A node whose ``next`` is itself is detached (``list_empty(&page->list)``), exactly the state
    the reclaimer leaves isolated pages in. Scalar operations go through memoryviews (fast
    Python ints); bulk splices use numpy.
    """

    def __init__(self, npages: int, nheads: int) -> None:
        n = npages + nheads
        dtype = np.int32 if n < (1 << 31) else np.int64
        self.npages = npages
        self.nheads = nheads
        self._next = np.arange(n, dtype=dtype)
        self._prev = np.arange(n, dtype=dtype)
        self.nxt = self._next.data
        self.prv = self._prev.data

    def head(self, h: int) -> int:
        """The slot of list head number ``h``."""
        if not 0 <= h < self.nheads:
            raise ModelInvariantError(f"list head {h} out of range")
        return self.npages + h

    def empty(self, node: int) -> bool:
        """``list_empty``: a head with no entries, or a detached page."""
        return bool(self.nxt[node] == node)

    def first(self, head: int) -> int:
        """``list_first_entry`` or -1 for an empty list."""
        n = int(self.nxt[head])
        return -1 if n == head else n

    def add_tail(self, node: int, head: int) -> None:
        """``list_add_tail(node, head)``."""
        nxt, prv = self.nxt, self.prv
        last = prv[head]
        nxt[node] = head
        prv[node] = last
        nxt[last] = node
        prv[head] = node

    def add(self, node: int, head: int) -> None:
        """``list_add(node, head)``: insert right after the head."""
        nxt, prv = self.nxt, self.prv
        first = nxt[head]
        nxt[node] = first
        prv[node] = head
        prv[first] = node
        nxt[head] = node

    def del_init(self, node: int) -> None:
        """``list_del_init(node)``."""
        nxt, prv = self.nxt, self.prv
        p = prv[node]
        n = nxt[node]
        nxt[p] = n
        prv[n] = p
        nxt[node] = node
        prv[node] = node

    def move_tail(self, node: int, head: int) -> None:
        """``list_move_tail``."""
        self.del_init(node)
        self.add_tail(node, head)

    def iterate(self, head: int) -> Iterator[int]:
        """Entries of ``head`` in order (do not modify the list while iterating)."""
        nxt = self.nxt
        n = nxt[head]
        while n != head:
            yield int(n)
            n = nxt[n]

    def to_array(self, head: int) -> npt.NDArray[np.int64]:
        """The entries of ``head`` as an array (walks the list)."""
        return np.fromiter(self.iterate(head), dtype=np.int64)

    def splice_tail_array(self, head: int, nodes: npt.NDArray[np.int64]) -> None:
        """Append detached pages ``nodes`` (in order) at the tail of ``head``, vectorized."""
        if len(nodes) == 0:
            return
        nodes = np.asarray(nodes, dtype=np.int64)
        last = int(self.prv[head])
        self._next[nodes[:-1]] = nodes[1:]
        self._prev[nodes[1:]] = nodes[:-1]
        self._prev[nodes[0]] = last
        self._next[last] = nodes[0]
        self._next[nodes[-1]] = head
        self._prev[head] = nodes[-1]

    def del_many(self, nodes: npt.NDArray[np.int64]) -> None:
        """``list_del_init`` of every node in ``nodes`` (distinct; attached to any lists or
        detached), vectorized: each surviving neighbour of a removed run is linked to the first
        survivor beyond it, found by pointer doubling over the removed nodes (O(n log run))."""
        nodes = np.asarray(nodes, dtype=np.int64)
        if len(nodes) == 0:
            return
        att = nodes[self._next[nodes] != nodes]
        if len(att):
            size = len(self._next)
            dead = np.zeros(size, dtype=np.bool_)
            dead[att] = True
            prv0 = self._prev[att]
            nxt0 = self._next[att]
            starts = np.flatnonzero(~dead[prv0])
            ends = np.flatnonzero(~dead[nxt0])
            if len(starts) == 1:
                # One removed run (e.g. all of an enclave's pages): link its two neighbours.
                p0, n0 = int(prv0[starts[0]]), int(nxt0[ends[0]])
                self._next[p0] = n0
                self._prev[n0] = p0
                self._next[nodes] = nodes
                self._prev[nodes] = nodes
                return
            fwd = nxt0.astype(np.int64)
            bwd = prv0.astype(np.int64)
            pos = np.full(size, -1, dtype=self._next.dtype)
            pos[att] = np.arange(len(att), dtype=self._next.dtype)
            for jump in (fwd, bwd):
                while True:
                    m = dead[jump]
                    if not m.any():
                        break
                    jump[m] = jump[pos[jump[m]]]
            prv = self._prev[att]
            live_p = ~dead[prv]
            self._next[prv[live_p]] = fwd[live_p]
            nxt = self._next[att]
            live_n = ~dead[nxt]
            self._prev[nxt[live_n]] = bwd[live_n]
        self._next[nodes] = nodes
        self._prev[nodes] = nodes

    def pop_front_many(self, head: int, count: int) -> list[int]:
        """Detach up to ``count`` entries from the front of ``head`` (for batch allocation)."""
        out: list[int] = []
        nxt, prv = self.nxt, self.prv
        n = nxt[head]
        # Fast path: a run of consecutive page indices linked in order (a fresh free list).
        while n != head and count - len(out) > 64:
            want = count - len(out)
            run = np.arange(n, min(n + want, self.npages), dtype=np.int64)
            links = self._next[run[:-1]] == run[1:]
            stop = int(np.argmin(links)) if not links.all() else len(run) - 1
            run = run[: stop + 1]
            if len(run) < 64:
                break
            after = int(self._next[int(run[-1])])
            self._next[run] = run
            self._prev[run] = run
            out += run.tolist()
            nxt[head] = after
            prv[after] = head
            n = after
        fast = len(out)
        while n != head and len(out) < count:
            out.append(int(n))
            n = nxt[n]
        for p in out[fast:]:
            nxt[p] = p
            prv[p] = p
        nxt[head] = n
        prv[n] = head
        return out


# ---------------------------------------------------------------------------------------
# Sections and nodes


@dataclass
class SgxNumaNode:
    """``struct sgx_numa_node``: a node's free and poison lists, EPC size and lock."""

    nid: int
    free_head: int
    poison_head: int
    lock: SpinLock
    size: int = 0


@dataclass(frozen=True)
class SgxEpcSection:
    """``struct sgx_epc_section``: physical range, first global page index, NUMA node."""

    index: int
    phys_addr: int
    size: int
    first_page: int
    nid: int

    @property
    def npages(self) -> int:
        return self.size >> PAGE_SHIFT

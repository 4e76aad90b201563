"""The TOML reader shared by scenario files and fleet files: key-path and line aware errors.

:func:`parse_toml` turns TOML syntax errors into :class:`~sgxsim.errors.ScenarioError` with the
line; :func:`line_index` maps every key path (``class[1].machine.sockets``) to the line that sets
it; :class:`TableReader` reads one table with typed converters (integers, strings, sizes,
durations) whose failures name the key path and its line, and rejects unknown keys.
:func:`parse_size` and :func:`parse_duration` read the ``"64MiB"`` / ``"2.5s"`` forms.

Models: nothing of SGX; the input plumbing of :mod:`sgxsim.sim.scenario` and
:mod:`sgxsim.sim.fleet.spec`.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any, NoReturn, TypeVar

from sgxsim.errors import ScenarioError

__all__ = [
    "DURATION_PATTERN",
    "MAX_DURATION_NS",
    "MAX_SIZE_BYTES",
    "SIZE_PATTERN",
    "TableReader",
    "format_limit",
    "format_ns_short",
    "line_index",
    "parse_duration",
    "parse_size",
    "parse_toml",
    "short_repr",
]

_SIZE_RE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|TiB|K|M|G|T)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "K": 1 << 10,
    "KiB": 1 << 10,
    "M": 1 << 20,
    "MiB": 1 << 20,
    "G": 1 << 30,
    "GiB": 1 << 30,
    "T": 1 << 40,
    "TiB": 1 << 40,
}
#: The longest simulated time a scenario may describe (``duration`` and every time in it).
MAX_DURATION_NS = 7 * 86_400_000_000_000
#: The largest size of one enclave, VM or EPC budget a scenario may name: 8 sections of 512 GiB.
MAX_SIZE_BYTES = 4 << 40

_DUR_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|ms|s|min|h|d)\s*$")
_DUR_UNITS = {
    "ns": 1,
    "us": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "min": 60_000_000_000,
    "h": 3_600_000_000_000,
    "d": 86_400_000_000_000,
}
#: The regular expressions of the size and duration strings (for JSON Schemas).
SIZE_PATTERN = _SIZE_RE.pattern
DURATION_PATTERN = _DUR_RE.pattern


def parse_size(value: object, key: str = "size") -> int:
    """Bytes from an int or a string such as ``"64MiB"``."""
    if isinstance(value, bool):
        raise ScenarioError(f"expected a size, got {value!r}", key=key)
    n: int | None = None
    if isinstance(value, int):
        if value < 0:
            raise ScenarioError(f"size must be >= 0, got {value}", key=key)
        n = value
    elif isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m and len(m.group(1)) <= 40:
            n = int(m.group(1)) * _SIZE_UNITS[m.group(2)]
    if n is None:
        raise ScenarioError(f'expected a size like 4096 or "64MiB", got {short_repr(value)}', key=key)
    if n > MAX_SIZE_BYTES:
        raise ScenarioError(f"{short_repr(value)} is larger than the limit of 4 TiB", key=key)
    return n


def short_repr(value: object) -> str:
    """``repr(value)``, cut to 60 characters for messages."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def parse_duration(value: object, key: str = "duration", *, hi: int | None = None) -> int:
    """Simulated nanoseconds from an int (ns) or a string such as ``"2.5s"``, ``"30d"``.

    ``hi`` bounds the result (default :data:`MAX_DURATION_NS`, the 7-day cap of a simulated
    run); a value above it is an error, never a silent clamp.
    """
    cap = MAX_DURATION_NS if hi is None else hi
    if isinstance(value, bool):
        raise ScenarioError(f"expected a duration, got {value!r}", key=key)
    if isinstance(value, int):
        if value < 0:
            raise ScenarioError(f"duration must be >= 0, got {value}", key=key)
        ns = value
    elif isinstance(value, str):
        m = _DUR_RE.match(value)
        if m is None:
            if value.strip().isdigit():
                num = value.strip()[:20]
                raise ScenarioError(
                    f'{short_repr(value)} has no unit: write e.g. "{num}ms" or "{num}s" '
                    "(a bare integer, without quotes, counts nanoseconds)",
                    key=key,
                )
            raise ScenarioError(
                f'expected a duration like "500ms", "2s" or an int of ns, got {short_repr(value)}', key=key
            )
        if len(m.group(1)) > 40:
            raise ScenarioError(f"{short_repr(value)} is too long to be a duration", key=key)
        ns = round(Fraction(m.group(1)) * _DUR_UNITS[m.group(2)])
    else:
        raise ScenarioError(
            f'expected a duration like "500ms", "2s" or an int of ns, got {short_repr(value)}', key=key
        )
    if ns > cap:
        raise ScenarioError(f"{short_repr(value)} is longer than the limit of {format_limit(cap)}", key=key)
    return ns


def format_limit(ns: int) -> str:
    """A duration limit for messages: ``7d``, ``10ms``."""
    for unit in ("d", "h", "min", "s", "ms", "us"):
        if ns >= _DUR_UNITS[unit] and ns % _DUR_UNITS[unit] == 0:
            return f"{ns // _DUR_UNITS[unit]}{unit}"
    return f"{ns}ns"


def format_ns_short(ns: int) -> str:
    """A simulated time for messages: ``4s``, ``1.5s``, ``250ms``."""
    for unit in ("d", "h", "min", "s", "ms", "us"):
        if ns >= _DUR_UNITS[unit]:
            value = Fraction(ns, _DUR_UNITS[unit])
            text = f"{float(value):.6g}" if value.denominator != 1 else str(value.numerator)
            return f"{text}{unit}"
    return "0s" if ns == 0 else f"{ns}ns"


def line_index(text: str) -> dict[str, int]:
    """Map key paths (``machine.sockets``, ``workload[1].heap``) to the line that sets them.

    Table headers (``[class.machine]``) and array-of-table headers (``[[class.workload]]``) are
    resolved through the current element of every enclosing array (``class[1].machine``). The
    first line wins. Used with :class:`TableReader` by scenario files and fleet files.
    """
    index: dict[str, int] = {}
    counters: dict[str, int] = {}
    prefix = ""
    header = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\"]+)\s*\]\]?")
    keyline = re.compile(r"^\s*([A-Za-z0-9_\-\"]+(?:\s*\.\s*[A-Za-z0-9_\-\"]+)*)\s*=")
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("#"):
            continue
        h = header.match(line)
        if h:
            parts = h.group(2).replace('"', "").split(".")
            resolved = ""
            for part in parts[:-1]:
                resolved = f"{resolved}.{part}" if resolved else part
                if resolved in counters:
                    resolved = f"{resolved}[{counters[resolved]}]"
            base = f"{resolved}.{parts[-1]}" if resolved else parts[-1]
            if h.group(1) == "[[":
                counters[base] = counters.get(base, -1) + 1
                prefix = f"{base}[{counters[base]}]"
            else:
                prefix = base
            index.setdefault(prefix, lineno)
            continue
        k = keyline.match(line)
        if k:
            key = re.sub(r"\s*\.\s*", ".", k.group(1)).replace('"', "")
            index.setdefault(f"{prefix}.{key}" if prefix else key, lineno)
    return index


T = TypeVar("T")


class TableReader:
    """Reads one TOML table with key-path-aware errors, and rejects unknown keys.

    ``TableReader(data, "", line_index(text))`` reads a whole document; :meth:`sub` and
    :meth:`array` give readers of nested tables. ``get``/``require`` take a converter
    (``int_``, ``str_``, ``duration``, ...) whose failures raise
    :class:`~sgxsim.errors.ScenarioError` naming the key path (``class[1].machine.sockets``)
    and its line; :meth:`done` rejects the keys nobody read. Shared by scenario and fleet files.
    """

    def __init__(self, table: object, path: str, lines: Mapping[str, int]) -> None:
        self.path = path
        self.lines = lines
        if not isinstance(table, dict):
            self.fail(f"expected a table, got {type(table).__name__}", path)
        self.table: dict[str, Any] = table
        self.used: set[str] = set()

    def where(self, name: str = "") -> str:
        """``path (line N)`` of this table or one of its keys, for messages."""
        key = self.key(name) if name else self.path
        line = self._line(key)
        return key if line is None else f"{key} (line {line})"

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, message: str, key: str) -> NoReturn:
        raise ScenarioError(message, key=key, line=self._line(key))

    def _line(self, key: str) -> int | None:
        probe = key
        while probe:
            if probe in self.lines:
                return self.lines[probe]
            if probe.endswith("]") and "[" in probe and probe.rsplit("[", 1)[0] in self.lines:
                # An element of an inline array (``allow[0]``): the line of the array's key.
                probe = probe.rsplit("[", 1)[0]
                continue
            probe = probe.rsplit(".", 1)[0] if "." in probe else ""
        return None

    def get(self, name: str, conv: Callable[[object, str], T], default: T) -> T:
        self.used.add(name)
        if name not in self.table:
            return default
        return conv(self.table[name], self.key(name))

    def require(self, name: str, conv: Callable[[object, str], T]) -> T:
        self.used.add(name)
        if name not in self.table:
            self.fail("required key is missing", self.key(name))
        return conv(self.table[name], self.key(name))

    def sub(self, name: str) -> TableReader | None:
        self.used.add(name)
        if name not in self.table:
            return None
        return TableReader(self.table[name], self.key(name), self.lines)

    def array(self, name: str) -> list[TableReader]:
        self.used.add(name)
        if name not in self.table:
            return []
        items = self.table[name]
        if not isinstance(items, list):
            self.fail("expected an array of tables ([[...]])", self.key(name))
        return [TableReader(item, f"{self.key(name)}[{i}]", self.lines) for i, item in enumerate(items)]

    def done(self) -> None:
        for extra in sorted(set(self.table) - self.used):
            self.fail(f"unknown key {extra!r}", self.key(extra))

    # converters bound to the reader so errors carry lines
    def int_(self, lo: int | None = None, hi: int | None = None) -> Callable[[object, str], int]:
        def conv(v: object, key: str) -> int:
            if not isinstance(v, int) or isinstance(v, bool):
                self.fail(f"expected an integer, got {short_repr(v)}", key)
            assert isinstance(v, int)
            if lo is not None and v < lo:
                self.fail(f"must be >= {lo}, got {v}", key)
            if hi is not None and v > hi:
                self.fail(f"must be <= {hi}, got {v}", key)
            return v

        return conv

    def bool_(self) -> Callable[[object, str], bool]:
        def conv(v: object, key: str) -> bool:
            if not isinstance(v, bool):
                self.fail(f"expected true or false, got {short_repr(v)}", key)
            return bool(v)

        return conv

    def str_(self, choices: tuple[str, ...] | None = None) -> Callable[[object, str], str]:
        def conv(v: object, key: str) -> str:
            if not isinstance(v, str):
                self.fail(f"expected a string, got {short_repr(v)}", key)
            assert isinstance(v, str)
            if choices is not None and v not in choices:
                self.fail(f"must be one of {', '.join(choices)}; got {short_repr(v)}", key)
            return v

        return conv

    def size(self, lo: int = 0, page_aligned: bool = False) -> Callable[[object, str], int]:
        def conv(v: object, key: str) -> int:
            try:
                n = parse_size(v, key)
            except ScenarioError as e:
                self.fail(e.message, key)
            if n < lo:
                self.fail(f"must be at least {lo} bytes, got {n}", key)
            if page_aligned and n % 4096:
                self.fail(f"must be a multiple of 4 KiB, got {n}", key)
            return n

        return conv

    def duration(self, lo: int = 0, hi: int | None = None) -> Callable[[object, str], int]:
        """A duration in ``[lo, hi]`` (``hi`` default: the 7-day cap); ``lo`` is a documented floor."""

        def conv(v: object, key: str) -> int:
            try:
                ns = parse_duration(v, key, hi=hi)
            except ScenarioError as e:
                self.fail(e.message, key)
            if ns < lo:
                self.fail(f"{short_repr(v)} is below the floor of {format_limit(lo)}", key)
            return ns

        return conv

    def opt_duration(self, lo: int = 0) -> Callable[[object, str], int | None]:
        def conv(v: object, key: str) -> int | None:
            if v == "forever" or v == "never":
                return None
            return self.duration(lo)(v, key)

        return conv

    def str_list(self, choices: tuple[str, ...]) -> Callable[[object, str], tuple[str, ...]]:
        def conv(v: object, key: str) -> tuple[str, ...]:
            if not isinstance(v, list):
                self.fail(f"expected an array of strings, got {short_repr(v)}", key)
            assert isinstance(v, list)
            out = []
            for i, item in enumerate(v):
                out.append(self.str_(choices)(item, f"{key}[{i}]"))
            return tuple(out)

        return conv


def parse_toml(text: str) -> dict[str, Any]:
    """The TOML document ``text``; a syntax error is a ``ScenarioError`` with its line."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        m = re.search(r"line (\d+)", str(err))
        raise ScenarioError(f"not valid TOML: {err}", line=int(m.group(1)) if m else None) from err
    except (ValueError, RecursionError) as err:  # e.g. an integer of more than 4300 digits
        raise ScenarioError(f"not valid TOML: {short_repr(str(err))}") from err

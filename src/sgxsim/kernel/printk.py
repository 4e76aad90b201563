"""The kernel log (dmesg) and WARN(): recorded, timestamped with simulated time, counted.

A :class:`KernelLog` belongs to one simulated machine (no global log). Messages are
stored as :class:`LogEntry` records and rendered like dmesg
(``"[    1.234567] sgx: EPC section 0x..."``). ``WARN()`` logs the message and a
``"WARNING: ..."`` line naming the call site, counts the warning, and returns the
condition so the caller goes on, as the kernel does.
"""

from __future__ import annotations

import enum
import sys
from dataclasses import dataclass

from sgxsim.errors import InvalidArgument
from sgxsim.kernel.locking import SchedulerHooks

__all__ = ["KernelLog", "KernelWarning", "LogEntry", "LogLevel", "format_timestamp"]

#: The separator Linux prints before a WARN splat (include/asm-generic/bug.h CUT_HERE).
CUT_HERE = "------------[ cut here ]------------"


class LogLevel(enum.IntEnum):
    """printk levels (include/linux/kern_levels.h): lower is more severe."""

    EMERG = 0
    ALERT = 1
    CRIT = 2
    ERR = 3
    WARNING = 4
    NOTICE = 5
    INFO = 6
    DEBUG = 7


def format_timestamp(time_ns: int) -> str:
    """dmesg's ``[%5lu.%06lu]`` timestamp (seconds.microseconds) for ``time_ns``."""
    us = time_ns // 1000
    return f"[{us // 1_000_000:5d}.{us % 1_000_000:06d}]"


def _format(fmt: object, args: tuple[object, ...]) -> str:
    if not isinstance(fmt, str):
        raise InvalidArgument(f"printk format must be a str, got {fmt!r}")
    if not args:
        return fmt
    try:
        return fmt % args
    except (TypeError, ValueError, KeyError) as exc:
        raise InvalidArgument(f"printk format {fmt!r} does not match arguments {args!r}: {exc}") from None


@dataclass(frozen=True)
class LogEntry:
    """One printk record."""

    time_ns: int
    level: LogLevel
    prefix: str  # the pr_fmt() subsystem prefix without ": ", or "" for none
    message: str
    task: str | None  # ``current->comm``, or None outside any task
    cpu: int | None = None

    @property
    def text(self) -> str:
        """The message with its subsystem prefix, as printed."""
        return f"{self.prefix}: {self.message}" if self.prefix else self.message

    def format(self, show_task: bool = False) -> str:
        """One dmesg line, e.g. ``"[    1.234567] sgx: message"`` (``[T name]`` added on request,
        like CONFIG_PRINTK_CALLER)."""
        caller = f"[{self.task or '-':>6}] " if show_task else ""
        return f"{format_timestamp(self.time_ns)} {caller}{self.text}"


@dataclass(frozen=True)
class KernelWarning:
    """One WARN() that fired."""

    time_ns: int
    site: str
    message: str
    task: str | None
    cpu: int | None
    key: str | None = None  # the WARN_ONCE key, if any


class KernelLog:
    """A machine's kernel ring buffer plus its WARN() bookkeeping.

    Models: kernel/printk/printk.c (printk records with a timestamp and level),
    include/linux/printk.h pr_*() with a per-subsystem pr_fmt() prefix,
    include/asm-generic/bug.h WARN()/WARN_ON()/WARN_ONCE() and kernel/panic.c __warn()
    (the "WARNING: CPU: n PID: ... at site" line, the warn counter of /sys/kernel/warn_count
    and TAINT_WARN).
    Differs: the buffer is unbounded; the WARNING line names the task by its comm
    (tasks have no PIDs here) and the site by function name (no file:line or offsets);
    no register dump or call trace.
    """

    def __init__(self, hooks: SchedulerHooks, prefix: str = "sgx") -> None:
        if not isinstance(prefix, str):
            raise InvalidArgument(f"log prefix must be a str, got {prefix!r}")
        self._hooks = hooks
        self.prefix = prefix
        self.entries: list[LogEntry] = []
        self.warnings: list[KernelWarning] = []
        self._once: set[str] = set()

    # ----------------------------------------------------------------- printk

    def printk(self, level: LogLevel, fmt: str, *args: object, prefix: str | None = None) -> LogEntry:
        """Record one message (``fmt % args``) at ``level``; returns the entry.

        Outcomes: the entry; ``InvalidArgument`` if ``fmt`` and ``args`` do not match.
        """
        message = _format(fmt, args)
        task = self._hooks.current_task()
        entry = LogEntry(
            time_ns=self._hooks.now_ns(),
            level=LogLevel(level),
            prefix=self.prefix if prefix is None else prefix,
            message=message,
            task=None if task is None else task.name,
            cpu=None if task is None else task.cpu,
        )
        self.entries.append(entry)
        return entry

    def pr_emerg(self, fmt: str, *args: object, prefix: str | None = None) -> LogEntry:
        return self.printk(LogLevel.EMERG, fmt, *args, prefix=prefix)

    def pr_crit(self, fmt: str, *args: object, prefix: str | None = None) -> LogEntry:
        return self.printk(LogLevel.CRIT, fmt, *args, prefix=prefix)

    def pr_err(self, fmt: str, *args: object, prefix: str | None = None) -> LogEntry:
        return self.printk(LogLevel.ERR, fmt, *args, prefix=prefix)

    def pr_warn(self, fmt: str, *args: object, prefix: str | None = None) -> LogEntry:
        return self.printk(LogLevel.WARNING, fmt, *args, prefix=prefix)

    def pr_notice(self, fmt: str, *args: object, prefix: str | None = None) -> LogEntry:
        return self.printk(LogLevel.NOTICE, fmt, *args, prefix=prefix)

    def pr_info(self, fmt: str, *args: object, prefix: str | None = None) -> LogEntry:
        return self.printk(LogLevel.INFO, fmt, *args, prefix=prefix)

    def pr_debug(self, fmt: str, *args: object, prefix: str | None = None) -> LogEntry:
        """Recorded at DEBUG level (as if dynamic debug were on); ``format()`` can filter it."""
        return self.printk(LogLevel.DEBUG, fmt, *args, prefix=prefix)

    # ----------------------------------------------------------------- WARN

    @property
    def warn_count(self) -> int:
        """Warnings logged so far (``/sys/kernel/warn_count``)."""
        return len(self.warnings)

    @property
    def tainted(self) -> bool:
        """TAINT_WARN: some WARN fired."""
        return bool(self.warnings)

    def _warn(self, site: str, fmt: str | None, args: tuple[object, ...], key: str | None) -> None:
        message = "" if fmt is None else _format(fmt, args)
        self.printk(LogLevel.WARNING, CUT_HERE, prefix="")
        if fmt is not None:
            self.printk(LogLevel.WARNING, "%s", message, prefix="")
        task = self._hooks.current_task()
        comm = "-" if task is None else task.name
        cpu = 0 if task is None else task.cpu
        self.printk(LogLevel.WARNING, "WARNING: CPU: %d Comm: %s at %s", cpu, comm, site, prefix="")
        self.warnings.append(
            KernelWarning(
                time_ns=self._hooks.now_ns(),
                site=site,
                message=message,
                task=None if task is None else task.name,
                cpu=None if task is None else task.cpu,
                key=key,
            )
        )

    @staticmethod
    def _site(site: str | None) -> str:
        # The caller of WARN*(): two frames up (this helper, then the WARN* method).
        return site if site is not None else sys._getframe(2).f_code.co_name

    def WARN(self, condition: object, fmt: str, *args: object, site: str | None = None) -> bool:  # noqa: N802
        """If ``condition``: log ``fmt % args`` and a WARNING line naming the call site, count it.

        Models: include/asm-generic/bug.h WARN(). Outcome: ``bool(condition)``.
        """
        if not condition:
            return False
        self._warn(self._site(site), fmt, args, None)
        return True

    def WARN_ON(self, condition: object, site: str | None = None) -> bool:  # noqa: N802
        """Models: include/asm-generic/bug.h WARN_ON(). Outcome: ``bool(condition)``."""
        if not condition:
            return False
        self._warn(self._site(site), None, (), None)
        return True

    def WARN_ONCE(  # noqa: N802
        self, key: str, condition: object, fmt: str, *args: object, site: str | None = None
    ) -> bool:
        """WARN() that logs and counts only the first time ``key`` fires.

        Models: include/asm-generic/bug.h WARN_ONCE(); ``key`` replaces the per-call-site
        static flag. Outcome: ``bool(condition)`` every time.
        """
        if not condition:
            return False
        if key not in self._once:
            self._once.add(key)
            self._warn(self._site(site), fmt, args, key)
        return True

    def WARN_ON_ONCE(self, key: str, condition: object, site: str | None = None) -> bool:  # noqa: N802
        """Models: include/asm-generic/bug.h WARN_ON_ONCE(). Outcome: ``bool(condition)``."""
        if not condition:
            return False
        if key not in self._once:
            self._once.add(key)
            self._warn(self._site(site), None, (), key)
        return True

    # ----------------------------------------------------------------- output

    def lines(self, level: LogLevel = LogLevel.DEBUG, show_task: bool = False) -> list[str]:
        """dmesg lines for entries at ``level`` or more severe."""
        return [e.format(show_task) for e in self.entries if e.level <= level]

    def format(self, level: LogLevel = LogLevel.DEBUG, show_task: bool = False) -> str:
        """The log as dmesg prints it, one line per entry."""
        return "\n".join(self.lines(level, show_task))

    def grep(self, needle: str) -> list[LogEntry]:
        """Entries whose printed text contains ``needle``."""
        return [e for e in self.entries if needle in e.text]

    def __len__(self) -> int:
        return len(self.entries)

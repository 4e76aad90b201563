"""The kernel designs for SVN updates, as one enum every layer above uses.

Each member names one way a Linux kernel can bring CPUSVN up to date after a microcode update
that affects SGX (the string value is what scenario files and the CLI spell):

* ``RFC_V2_TEARDOWN``: the RFC v2 series (March 2022): on a late load, lock the EPC, tear down
  every enclave, run EUPDATESVN.
* ``EXPLICIT_TRIGGER``: the alternative discussed on the posting's thread: the administrator
  writes a knob; destructive (teardown) or non-destructive (-EBUSY while SGX is in use).
* ``LINUX_6_19_ON_OPEN``: what Linux 6.19 merged: EUPDATESVN when the first SGX file is opened
  and the EPC is empty.
* ``NONE``: a kernel without EUPDATESVN support (CPUSVN changes only at reboot).

The what-if ``only_if_svn_rises`` is not a kernel design (Linux has no way to know whether a
patch raises the SGX SVN); it stays a flag of :class:`sgxsim.kernel.svn.SvnConfig`.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["SvnPolicy"]


class SvnPolicy(StrEnum):
    """How the kernel updates CPUSVN after a microcode update affecting SGX."""

    RFC_V2_TEARDOWN = "rfc-v2-teardown"
    EXPLICIT_TRIGGER = "explicit-trigger"
    LINUX_6_19_ON_OPEN = "linux-6.19-on-open"
    NONE = "none"

    @classmethod
    def parse(cls, value: str) -> SvnPolicy:
        """The member spelled ``value``; ValueError naming the choices otherwise."""
        try:
            return cls(value)
        except ValueError:
            choices = ", ".join(m.value for m in cls)
            raise ValueError(f"unknown SVN update policy {value!r}; expected one of {choices}") from None

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

The what-if ``only_if_svn_rises`` (:data:`WHAT_IF_POLICY`) is not a kernel design (Linux has no
way to know whether a patch raises the SGX SVN): it stays a flag of
:class:`sgxsim.kernel.svn.SvnConfig`, not a member; the runner and the CLI accept its name
next to the members'.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["WHAT_IF_POLICY", "SvnPolicy"]

#: The name of the what-if run: the RFC v2 teardown, skipped when no CPU's loaded SVN exceeds
#: CPUSVN (``SvnConfig.only_if_svn_rises``). Not an :class:`SvnPolicy` member: Linux cannot know.
WHAT_IF_POLICY = "only_if_svn_rises"


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

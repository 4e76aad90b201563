"""One exception hierarchy for sgxsim.

Architectural outcomes (SGX return codes, #GP/#PF) are *values* in :mod:`sgxsim.hw`;
Linux outcomes are ``OSError(errno, strerror)`` at the user boundary. The exceptions
here are for misuse of the model itself, broken model invariants, and failed
attestation verification.
"""

from __future__ import annotations

import enum


class SgxSimError(Exception):
    """Base class of every exception sgxsim raises on its own behalf."""


class InvalidArgument(SgxSimError, ValueError):
    """A wrong Python type or an impossible configuration (e.g. 9 EPC sections).

    The message names the bad value.
    """


class ModelInvariantError(SgxSimError):
    """A model invariant is broken (a bug in sgxsim, never an architectural outcome)."""


class ScenarioError(SgxSimError):
    """A scenario file is malformed; carries the key path and, when known, the line."""

    def __init__(self, message: str, *, key: str = "", line: int | None = None, source: str = "") -> None:
        self.key = key
        self.line = line
        self.source = source
        self.message = message
        where = key
        if source:
            # ``FILE:LINE: key: message``, as compilers print it (editors jump to the line).
            where = ": ".join(x for x in (source if line is None else f"{source}:{line}", key) if x)
        elif line is not None:
            where = f"{key} (line {line})" if key else f"line {line}"
        super().__init__(f"{where}: {message}" if where else message)

    def in_file(self, source: str) -> ScenarioError:
        """The same error, located in file ``source``."""
        return ScenarioError(self.message, key=self.key, line=self.line, source=source)


class VerificationError(SgxSimError):
    """Attestation verification failed; ``reason`` is an enum member naming why."""

    def __init__(self, reason: enum.Enum, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.name}: {detail}" if detail else reason.name)

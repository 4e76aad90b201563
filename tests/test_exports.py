"""The curated top-level API: every name in __all__ exists and nothing private leaks."""

from __future__ import annotations

import sgxsim


def test_all_names_resolve() -> None:
    for name in sgxsim.__all__:
        assert getattr(sgxsim, name) is not None, name


def test_all_is_sorted_and_public() -> None:
    assert list(sgxsim.__all__) == sorted(sgxsim.__all__)
    assert not [n for n in sgxsim.__all__ if n.startswith("_")]


def test_error_hierarchy() -> None:
    assert issubclass(sgxsim.InvalidArgument, sgxsim.SgxSimError)
    assert issubclass(sgxsim.InvalidArgument, ValueError)
    assert issubclass(sgxsim.VerificationError, sgxsim.SgxSimError)
    assert issubclass(sgxsim.ModelInvariantError, sgxsim.SgxSimError)

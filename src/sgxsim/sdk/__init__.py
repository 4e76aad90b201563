"""User space: enclave images, the SIGSTRUCT signer, the ioctl loader and in-enclave helpers.

* :mod:`sgxsim.sdk.image` -- segments, enclave size, TCS contents, offline MRENCLAVE;
* :mod:`sgxsim.sdk.sign` -- SIGSTRUCT for an image, RSA-3072 e=3 keys (PEM or seeded);
* :mod:`sgxsim.sdk.loader` -- open/CREATE/ADD_PAGES/INIT/mmap as the kernel selftests do;
* :mod:`sgxsim.sdk.runtime` -- link-time constants and helpers for enclave programs;
* :mod:`sgxsim.sdk.test_encl` -- the kernel selftest enclave;
* :mod:`sgxsim.sdk.quoting` -- the PCE, the QE and an attestable application enclave;
* :mod:`sgxsim.sdk.enclaves` -- the code that runs inside those enclaves, as checked modules.

The main names are importable from here (``from sgxsim.sdk import load_enclave``); each is
imported on first use, so importing the package pulls in neither ``cryptography`` nor the
quoting enclaves.

Layering: imports :mod:`sgxsim.kernel` and :mod:`sgxsim.hw` only (never ``sim`` or ``cli``).
"""

from __future__ import annotations

import importlib
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from sgxsim.sdk.image import EnclaveImage, ImageBuilder, standard_image
    from sgxsim.sdk.loader import Enclave, load_enclave
    from sgxsim.sdk.quoting import (
        AppEnclave,
        EnclaveBuild,
        ProvisioningCertificationEnclave,
        QuotingEnclave,
        build_app,
        build_pce,
        build_qe,
        load_app,
        load_pce,
        load_qe,
    )
    from sgxsim.sdk.runtime import link_program
    from sgxsim.sdk.sign import generate_signing_key, sign_enclave
    from sgxsim.sdk.test_encl import build_test_encl

#: Exported name -> the module defining it.
_EXPORTS: Final = MappingProxyType(
    {
        "EnclaveImage": "image",
        "ImageBuilder": "image",
        "standard_image": "image",
        "Enclave": "loader",
        "load_enclave": "loader",
        "AppEnclave": "quoting",
        "EnclaveBuild": "quoting",
        "ProvisioningCertificationEnclave": "quoting",
        "QuotingEnclave": "quoting",
        "build_app": "quoting",
        "build_pce": "quoting",
        "build_qe": "quoting",
        "load_app": "quoting",
        "load_pce": "quoting",
        "load_qe": "quoting",
        "link_program": "runtime",
        "generate_signing_key": "sign",
        "sign_enclave": "sign",
        "build_test_encl": "test_encl",
    }
)

__all__ = [
    "AppEnclave",
    "Enclave",
    "EnclaveBuild",
    "EnclaveImage",
    "ImageBuilder",
    "ProvisioningCertificationEnclave",
    "QuotingEnclave",
    "build_app",
    "build_pce",
    "build_qe",
    "build_test_encl",
    "generate_signing_key",
    "link_program",
    "load_app",
    "load_enclave",
    "load_pce",
    "load_qe",
    "sign_enclave",
    "standard_image",
]


def __getattr__(name: str) -> object:
    """Import an exported name's module on first use (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

"""The enclave code as modules: the bytes builders load are the files' bytes, every enclave
module is listed and importable on the host, and the sdk package exports its main names lazily."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import sgxsim.sdk
from sgxsim.errors import InvalidArgument
from sgxsim.hw.crypto import rsa3072_e3_keygen
from sgxsim.rand import Rng
from sgxsim.sdk import enclaves
from sgxsim.sdk.enclaves import ENCLAVE_MODULES, enclave_source
from sgxsim.sdk.quoting import APP_SOURCE, PCE_SOURCE, QE_SOURCE, build_app, build_pce, build_qe
from sgxsim.sdk.runtime import RUNTIME_SOURCE
from sgxsim.sdk.test_encl import TEST_ENCL_SOURCE, build_test_encl

PACKAGE_DIR = Path(enclaves.__file__).parent


def test_every_enclave_module_is_listed_and_loads_as_its_file_bytes() -> None:
    on_disk = {p.stem for p in PACKAGE_DIR.glob("*.py")} - {"__init__", "_link"}
    assert on_disk == ENCLAVE_MODULES
    for name in sorted(ENCLAVE_MODULES):
        assert enclave_source(name).encode() == (PACKAGE_DIR / f"{name}.py").read_bytes()
    with pytest.raises(InvalidArgument):
        enclave_source("../loader")


@pytest.mark.parametrize("name", sorted(ENCLAVE_MODULES))
def test_enclave_module_imports_on_the_host(name: str) -> None:
    module = importlib.import_module(f"sgxsim.sdk.enclaves.{name}")
    assert module.__file__ is not None and Path(module.__file__).parent == PACKAGE_DIR


def test_programs_are_the_modules_in_link_order() -> None:
    kdf, common = enclave_source("kdf"), enclave_source("ae_common")
    for source, own in ((PCE_SOURCE, "pce"), (QE_SOURCE, "qe"), (APP_SOURCE, "app")):
        assert source == kdf + common + enclave_source(own)
    assert enclave_source("runtime") == RUNTIME_SOURCE
    assert enclave_source("test_encl") == TEST_ENCL_SOURCE


def test_images_hold_the_module_bytes() -> None:
    """What EADD puts in EPC (and MRENCLAVE measures) contains each module's bytes verbatim."""
    key = rsa3072_e3_keygen(Rng(3).stream("keys"))
    builds = {"pce": build_pce(key), "qe": build_qe(key), "app": build_app(key)}
    for name, build in builds.items():
        text = next(s for s in build.image.segments if s.name == "text").contents()
        for part in ("runtime", "kdf", "ae_common", name):
            assert enclave_source(part).encode() in text, (name, part)
    text = next(s for s in build_test_encl().segments if s.name == "text").contents()
    assert text.count(enclave_source("test_encl").encode()) == 2  # encl_entry and encl_dyn_entry


def test_sdk_exports_main_names_lazily() -> None:
    for name in sgxsim.sdk.__all__:
        assert getattr(sgxsim.sdk, name) is not None
    with pytest.raises(AttributeError):
        _ = sgxsim.sdk.no_such_name
    code = "import sys, sgxsim.sdk; print('cryptography' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

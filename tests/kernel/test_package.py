"""The kernel package's public face: exports without heavy imports, and useful reprs."""

from __future__ import annotations

import subprocess
import sys

import pytest
from tests.kernel.kernel_helpers import build_enclave, make_world

import sgxsim.kernel
from sgxsim.kernel import encl as em
from sgxsim.kernel.policy import SvnPolicy


def test_package_exports_main_classes() -> None:
    from sgxsim.kernel import Kernel, Process, SvnConfig
    from sgxsim.kernel import SvnPolicy as Exported
    from sgxsim.kernel.main import Kernel as MainKernel
    from sgxsim.kernel.process import Process as CompatProcess

    assert Kernel is MainKernel and Process is CompatProcess and Exported is SvnPolicy
    assert SvnConfig().policy is SvnPolicy.RFC_V2_TEARDOWN
    assert set(sgxsim.kernel.__all__) <= set(dir(sgxsim.kernel))
    for name in sgxsim.kernel.__all__:
        assert getattr(sgxsim.kernel, name).__name__ == name
    with pytest.raises(AttributeError):
        _ = sgxsim.kernel.NoSuchThing


def test_package_import_is_light() -> None:
    """Importing the package or its policy module (what the CLI does) loads no numpy."""
    code = "import sys, sgxsim.kernel, sgxsim.kernel.policy; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_reprs_name_state() -> None:
    w = make_world(64)
    k = w.kernel
    free0 = k.sgx_nr_free_pages.read()
    assert repr(k) == (
        f"<Kernel policy={SvnPolicy.RFC_V2_TEARDOWN} enclaves=0 vepcs=0 processes=0 "
        f"epc_free={free0}/64 warns=0>"
    )
    p = w.proc("app")
    assert repr(p).startswith(f"<Process 'app' pid={p.pid} alive cpu=0 fds=0 vmas=2")
    encl = build_enclave(p)
    e = em.encl_of_file(p.file(encl.fd))
    assert e is not None
    r = repr(e)
    head = f"<SgxEncl id={e.id} base={encl.base:#x} size={encl.size:#x} flags=CREATED|INITIALIZED"
    assert r.startswith(head), r
    assert f"pages={e.pages.count} " in r and "secs=evicted" not in r
    assert f"enclaves=1 vepcs=0 processes=1 epc_free={k.sgx_nr_free_pages.read()}/64" in repr(k)
    assert k.sgx_nr_free_pages.read() < free0
    p.exit(3)
    assert repr(p).startswith(f"<Process 'app' pid={p.pid} exited(3)")
    w.teardown()

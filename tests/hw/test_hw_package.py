"""The hw package's public face: lazy exports and a useful Machine repr."""

from __future__ import annotations

import subprocess
import sys

import pytest

import sgxsim.hw as hw
from sgxsim.hw.arch import EnclsLeaf, Pageinfo, Secs, SgxStatus
from sgxsim.hw.machine import Machine, MachineConfig


def test_exports_resolve_to_their_modules() -> None:
    for name in hw.__all__:
        obj = getattr(hw, name)
        assert getattr(obj, "__name__", name) == name or name == "LeafResult"
    assert hw.Machine is Machine
    with pytest.raises(AttributeError):
        _ = hw.NoSuchThing


def test_importing_arch_stays_cheap() -> None:
    code = (
        "import sys, sgxsim.hw, sgxsim.hw.arch\n"
        "print(any(m.split('.')[0] in ('numpy', 'greenlet') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_machine_repr() -> None:
    m = Machine(MachineConfig(sockets=2, cpus_per_socket=2))
    text = repr(m)
    assert text.startswith("Machine(sockets=2, cpus=4, epc=1 MiB in 1 section(s), enclaves=0")
    assert "(no snapshot yet)" in text
    src, pageinfo = m.dram.alloc_page(), m.dram.alloc_page()
    m.dram.write(src, Secs(size=0x2000, base=0x10000, ssa_frame_size=1, attributes=4, xfrm=3).pack())
    m.dram.write(pageinfo, Pageinfo(srcpge=src, secinfo=m.dram.alloc_page()).pack())
    assert m.encls(0, EnclsLeaf.ECREATE, pageinfo, m.epc.phys_of(0)) == SgxStatus.SUCCESS
    text = repr(m)
    assert "enclaves=1" in text and f"cpusvn={m.cpusvn.hex()}," in text and "no snapshot" not in text

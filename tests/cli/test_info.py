"""`sgxsim info`: CPUID leaf 0x12 as Linux decodes it, CPUs with microcode, CPUSVN."""

from __future__ import annotations

import json

from click.testing import CliRunner

from sgxsim.cli import main
from sgxsim.hw.arch import decode_epc_section


def _info(*args: str) -> dict[str, object]:
    result = CliRunner().invoke(main, ["info", "--json", *args])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert isinstance(data, dict)
    return data


def test_info_json_cpuid_bits() -> None:
    data = _info("--sockets", "2", "--cpus-per-socket", "3", "--epc-mib", "32")
    eax = data["cpuid_12_0"]["eax"]  # type: ignore[index]
    assert eax & 1 and eax & 2 and eax & (1 << 10)
    sections = data["epc_sections"]
    assert isinstance(sections, list) and len(sections) == 2
    for s in sections:
        assert decode_epc_section(*s["cpuid"]) == (s["base"], 32 << 20)
    cpus = data["cpus"]
    assert isinstance(cpus, list) and [c["socket"] for c in cpus] == [0, 0, 0, 1, 1, 1]
    assert data["cpusvn_snapshot_taken"] is False


def test_info_feature_switches() -> None:
    data = _info("--no-sgx2", "--no-eupdatesvn")
    eax = data["cpuid_12_0"]["eax"]  # type: ignore[index]
    assert eax & 1 and not eax & 2 and not eax & (1 << 10)


def test_info_tables() -> None:
    result = CliRunner().invoke(main, ["info", "--cpus-per-socket", "2"])
    assert result.exit_code == 0
    assert "EUPDATESVN" in result.output and "CPUSVN" in result.output and "0-1" in result.output


def test_info_usage_error_exit_code() -> None:
    result = CliRunner().invoke(main, ["info", "--sockets", "9"])
    assert result.exit_code == 2

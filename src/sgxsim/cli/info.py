"""``sgxsim info``: the simulated machine as software sees it (CPUID leaf 0x12, CPUs, CPUSVN)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from sgxsim.hw.arch import PAGE_SIZE
from sgxsim.hw.epc import EpcSectionConfig
from sgxsim.hw.machine import DEFAULT_EPC_BASE, DEFAULT_EPC_STRIDE, Machine, MachineConfig
from sgxsim.rand import Rng

__all__ = ["info"]

_MIB = 1 << 20


def _machine_from_options(
    sockets: int, cpus_per_socket: int, epc_mib: int, sgx2: bool, eupdatesvn: bool, seed: int
) -> Machine:
    sections = tuple(
        EpcSectionConfig(DEFAULT_EPC_BASE + i * DEFAULT_EPC_STRIDE, epc_mib * _MIB, node=i)
        for i in range(sockets)
    )
    config = MachineConfig(
        sockets=sockets,
        cpus_per_socket=cpus_per_socket,
        epc_sections=sections,
        sgx2=sgx2,
        eupdatesvn=eupdatesvn,
    )
    return Machine(config, Rng(seed))


def _fmt_size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} B"


def _cpu_ranges(cpus: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Group consecutive CPUs that run the same patch on the same socket ("0-3")."""
    groups: list[tuple[int, int, dict[str, Any]]] = []
    for cpu in cpus:
        key = (cpu["socket"], cpu["microcode_revision"], cpu["microcode_svn"])
        if groups and groups[-1][1] == cpu["id"] - 1:
            last = groups[-1][2]
            if (last["socket"], last["microcode_revision"], last["microcode_svn"]) == key:
                groups[-1] = (groups[-1][0], cpu["id"], last)
                continue
        groups.append((cpu["id"], cpu["id"], cpu))
    return [(str(a) if a == b else f"{a}-{b}", c) for a, b, c in groups]


def _print_info(console: Console, info: dict[str, Any]) -> None:
    cpuid = info["cpuid_12_0"]
    t = Table(title="CPUID leaf 0x12", title_justify="left")
    for col in ("sub-leaf", "EAX", "EBX", "ECX", "EDX"):
        t.add_column(col, justify="right")
    t.add_column("decoded")
    features = [
        n
        for n, on in (("SGX1", info["sgx1"]), ("SGX2", info["sgx2"]), ("EUPDATESVN", info["eupdatesvn"]))
        if on
    ]
    t.add_row("0", *(f"{cpuid[r]:#010x}" for r in ("eax", "ebx", "ecx", "edx")), " ".join(features))
    for s in info["epc_sections"]:
        t.add_row(str(2 + s["index"]), *(f"{w:#010x}" for w in s["cpuid"]), f"EPC section {s['index']}")
    console.print(t)
    e = Table(title="EPC sections", title_justify="left")
    for col in ("section", "base", "size", "pages", "node"):
        e.add_column(col, justify="right")
    for s in info["epc_sections"]:
        e.add_row(str(s["index"]), f"{s['base']:#x}", _fmt_size(s["size"]), str(s["pages"]), str(s["node"]))
    console.print(e)
    c = Table(title="Logical processors", title_justify="left")
    for col in ("CPUs", "socket", "microcode revision"):
        c.add_column(col, justify="right")
    c.add_column("patch SVN (16 components)")
    for label, cpu in _cpu_ranges(info["cpus"]):
        c.add_row(label, str(cpu["socket"]), f"{cpu['microcode_revision']:#x}", cpu["microcode_svn"])
    console.print(c)
    console.print(
        f"EPC: {info['epc_pages']} pages ({_fmt_size(info['epc_pages'] * PAGE_SIZE)}) "
        f"in {len(info['epc_sections'])} section(s)"
    )
    state = "snapshot taken" if info["cpusvn_snapshot_taken"] else "snapshot at first SGX use"
    console.print(f"CPUSVN: {info['cpusvn']} ({state})")


@click.command("info")
@click.option(
    "--sockets", type=click.IntRange(1, 8), default=2, show_default=True, help="CPU sockets (NUMA nodes)."
)
@click.option(
    "--cpus-per-socket",
    type=click.IntRange(1, 512),
    default=4,
    show_default=True,
    help="Logical processors per socket.",
)
@click.option(
    "--epc-mib",
    type=click.IntRange(1, 512 * 1024),
    default=64,
    show_default=True,
    help="EPC per socket, MiB (one section per socket).",
)
@click.option("--sgx2/--no-sgx2", default=True, show_default=True, help="Enumerate SGX2 (EDMM).")
@click.option("--eupdatesvn/--no-eupdatesvn", default=True, show_default=True, help="Enumerate EUPDATESVN.")
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Seed of the machine's randomness.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def info(
    sockets: int, cpus_per_socket: int, epc_mib: int, sgx2: bool, eupdatesvn: bool, seed: int, as_json: bool
) -> None:
    """Print the simulated machine: CPUID leaf 0x12, logical CPUs and microcode, CPUSVN."""
    machine = _machine_from_options(sockets, cpus_per_socket, epc_mib, sgx2, eupdatesvn, seed)
    data = machine.describe()
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        _print_info(Console(file=sys.stdout), data)

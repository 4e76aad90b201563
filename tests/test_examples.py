"""The shipped examples/*.toml parse, match the JSON Schema and run; every kind of mistake in a
scenario file is reported with its key path and line."""

from __future__ import annotations

import tomllib
from pathlib import Path

import jsonschema
import pytest

from sgxsim.errors import ScenarioError
from sgxsim.sim.demo import DEMO_SCENARIO_TOML
from sgxsim.sim.report import report_schema
from sgxsim.sim.runner import Runner
from sgxsim.sim.scenario import json_schema, load_scenario, parse_scenario

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.toml"))
#: Examples the test suite runs end to end (the 512 GiB one is for benchmarks/bench_run.py).
RUNNABLE = [p for p in EXAMPLES if p.stem != "large-epc-512gib"]


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 5 and any(p.stem == "large-epc-512gib" for p in EXAMPLES)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_parses_and_matches_schema(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.name == path.stem and scenario.description
    jsonschema.validate(tomllib.loads(path.read_text()), json_schema())


def test_demo_matches_schema() -> None:
    jsonschema.validate(tomllib.loads(DEMO_SCENARIO_TOML), json_schema())


@pytest.mark.parametrize("path", RUNNABLE, ids=lambda p: p.stem)
def test_example_runs(path: Path) -> None:
    res = Runner(load_scenario(path)).run()
    jsonschema.validate(res.report.to_dict(), report_schema())
    assert res.report.kernel_warnings == 0
    assert res.metrics["svn_updates_ok"] == 1  # every example raises CPUSVN exactly once
    assert res.timeline.cpusvn_steps


HEAD = """\
[scenario]
name = "x"

[machine]
sockets = 2

[[machine.microcode.patches]]
name = "p"
revision = 1
late_microcode_svn = 3

[[workload]]
name = "w"
"""


@pytest.mark.parametrize(
    ("tail", "key", "line"),
    [
        ("heap = 12.5\n", "workload[0].heap", 14),  # wrong type
        ("count = 0\n", "workload[0].count", 14),  # out of range
        ('colour = "red"\n', "workload[0].colour", 14),  # unknown key
        ('on_epc_loss = "panic"\n', "workload[0].on_epc_loss", 14),  # not one of the choices
        ('heap = "12 parsecs"\n', "workload[0].heap", 14),  # bad size
        ('image_size = "5000"\n', "workload[0].image_size", 14),  # not page aligned
        ('start = "soon"\n', "workload[0].start", 14),  # bad duration
        ('swap_out = true\nsgx2_growth = "8KiB"\n', "workload[0].swap_out", 14),  # conflicting keys
        ('\n[[workload]]\nname = "w"\n', "workload[1].name", 16),  # duplicate name
        ('\n[[vm]]\nname = "v"\n', "vm[0].epc", 15),  # missing required key
        ('\n[[event]]\nat = "1s"\nkind = "microcode_load"\npatch = "q"\n', "event[0].patch", 18),
        ('\n[[event]]\nat = "1s"\nkind = "reboot"\n', "event[0].kind", 17),
        ('\n[[event]]\nat = "1s"\nkind = "tcb_recovery"\n', "event[0].new_late_microcode_svn", 15),
        ('\n[relying_party]\nallow = ["Fine"]\n', "relying_party.allow[0]", 16),
    ],
)
def test_mistakes_name_key_and_line(tail: str, key: str, line: int) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(HEAD + tail)
    assert info.value.key == key
    assert info.value.line == line
    assert f"{key} (line {line})" in str(info.value)


@pytest.mark.parametrize(
    ("text", "key", "line"),
    [
        (HEAD.replace("sockets = 2", "sockets = 9"), "machine.sockets", 5),
        (
            HEAD.replace("sockets = 2", 'sockets = 2\nsvn_update_policy = "yolo"'),
            "machine.svn_update_policy",
            6,
        ),
        (HEAD + '\n[[machine.epc_sections]]\nsize = "1MiB"\nnode = 3\n', "machine.epc_sections[0].node", 17),
        (HEAD.replace('name = "x"\n', ""), "scenario.name", 1),
    ],
)
def test_machine_mistakes_name_key_and_line(text: str, key: str, line: int) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text)
    assert (info.value.key, info.value.line) == (key, line)


def test_toml_syntax_error_has_line() -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(HEAD + "heap = = 3\n")
    assert info.value.line == 14 and "not valid TOML" in str(info.value)

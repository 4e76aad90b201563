"""Scenario files: valid ones parse to typed specs; every kind of mistake names its key and line."""

from __future__ import annotations

import json
import tomllib

import jsonschema
import pytest

from sgxsim.errors import ScenarioError
from sgxsim.sim.scenario import (
    TableReader,
    json_schema,
    line_index,
    parse_duration,
    parse_scenario,
    parse_size,
)

GOOD = """\
[scenario]
name = "two sockets"
seed = 7
duration = "5s"

[machine]
sockets = 2
cpus_per_socket = 2
svn_update_policy = "rfc-v2-teardown"
vepc = "zap"

[[machine.epc_sections]]
size = "64MiB"

[[machine.epc_sections]]
size = "32MiB"
node = 1

[machine.microcode.early]
revision = 0xd0003a5
late_microcode_svn = 2

[[machine.microcode.patches]]
name = "ipu-2025.2"
revision = 0xd0003b9
late_microcode_svn = 3

[machine.latency]
EREMOVE = 2000

[[workload]]
name = "db"
heap = "1MiB"
lifetime = "forever"
attest_every = "500ms"
on_epc_loss = "exit"

[[workload]]
name = "web"
count = 3

[[vm]]
name = "guest"
epc = "8MiB"

[[event]]
at = "2s"
kind = "microcode_load"
patch = "ipu-2025.2"

[[event]]
at = "1s"
kind = "tcb_recovery"
new_late_microcode_svn = 3

[relying_party]
allow = ["UpToDate"]
grace_period = "30d"
"""


def test_good_scenario_parses() -> None:
    s = parse_scenario(GOOD)
    assert s.name == "two sockets" and s.seed == 7 and s.duration == 5_000_000_000
    assert [(e.size, e.node) for e in s.machine.epc_sections] == [(64 << 20, 0), (32 << 20, 1)]
    assert s.machine.vepc == "zap"
    assert s.machine.patches[0].revision == 0xD0003B9
    assert s.machine.latency == {"EREMOVE": 2000}
    assert s.workloads[0].lifetime is None and s.workloads[0].attest_every == 500_000_000
    assert s.workloads[1].count == 3
    # events come out sorted by time
    assert [e.kind for e in s.events] == ["tcb_recovery", "microcode_load"]
    assert s.relying_party.grace_period == 30 * 86_400 * 10**9


def test_good_scenario_matches_json_schema() -> None:
    jsonschema.validate(tomllib.loads(GOOD), json_schema())
    json.dumps(json_schema())  # serializable


@pytest.mark.parametrize(
    ("old", "new", "key", "anchor"),
    [
        ('heap = "1MiB"', 'heap = "1MB"', "workload[0].heap", None),
        ("node = 1", "node = 4", "machine.epc_sections[1].node", None),
        ('patch = "ipu-2025.2"', 'patch = "nope"', "event[0].patch", None),
        ("sockets = 2", "sockets = 2\nsocket = 3", "machine.socket", "socket = 3"),
        ('name = "two sockets"', "name = 3", "scenario.name", None),
        ('vepc = "zap"', 'vepc = "maybe"', "machine.vepc", None),
        (
            'svn_update_policy = "rfc-v2-teardown"',
            'svn_update_policy = "yolo"',
            "machine.svn_update_policy",
            None,
        ),
        ("EREMOVE = 2000", "EREMOVAL = 2000", "machine.latency", "[machine.latency]"),
        ("EREMOVE = 2000", "EREMOVE = -1", "machine.latency.EREMOVE", None),
        ('size = "32MiB"', 'size = "1000"', "machine.epc_sections[1].size", None),
        ("count = 3", "count = 0", "workload[1].count", None),
        ('allow = ["UpToDate"]', 'allow = ["Fine"]', "relying_party.allow[0]", None),
        ("new_late_microcode_svn = 3", "", "event[1].new_late_microcode_svn", 'kind = "tcb_recovery"'),
        ('on_epc_loss = "exit"', 'on_epc_loss = "panic"', "workload[0].on_epc_loss", None),
    ],
)
def test_mistakes_name_key_and_line(old: str, new: str, key: str, anchor: str | None) -> None:
    text = GOOD.replace(old, new, 1)
    assert text != GOOD
    anchor = anchor or new
    expected_line = text[: text.index(anchor)].count("\n") + 1
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text)
    assert info.value.key == key
    # The line of the key, or of its table when the key is missing.
    assert info.value.line is not None
    assert expected_line - 3 <= info.value.line <= expected_line, info.value
    assert key in str(info.value)


def test_missing_scenario_table() -> None:
    with pytest.raises(ScenarioError, match="scenario"):
        parse_scenario("[machine]\nsockets = 1\n")


def test_toml_syntax_error_has_line() -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario('[scenario]\nname = "x"\nduration = 5s\n')
    assert info.value.line == 3


def test_duplicate_workload_names() -> None:
    text = GOOD.replace('name = "web"', 'name = "db"')
    with pytest.raises(ScenarioError, match="duplicate workload"):
        parse_scenario(text)


def test_nine_sections_rejected() -> None:
    text = (
        '[scenario]\nname = "x"\n[machine]\nsockets = 1\n' + '[[machine.epc_sections]]\nsize = "4KiB"\n' * 9
    )
    with pytest.raises(ScenarioError, match="at most 8"):
        parse_scenario(text)


@pytest.mark.parametrize(
    ("text", "value"), [("4096", 4096), ("64MiB", 64 << 20), ("2 GiB", 2 << 30), ("1T", 1 << 40)]
)
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize(("text", "value"), [("1s", 10**9), ("2.5ms", 2_500_000), ("7d", 7 * 86_400 * 10**9)])
def test_parse_duration(text: str, value: int) -> None:
    assert parse_duration(text) == value


def test_parse_duration_caps_at_seven_days_and_names_a_missing_unit() -> None:
    with pytest.raises(ScenarioError, match="longer than the limit of 7d"):
        parse_duration("99999999999999999999999s")
    with pytest.raises(ScenarioError, match="longer than the limit of 7d"):
        parse_duration(9223372036854775807)
    assert parse_duration("30d", hi=31 * 86_400 * 10**9) == 30 * 86_400 * 10**9
    with pytest.raises(ScenarioError, match="has no unit") as info:
        parse_duration("1500", "--at")
    assert "expected" not in str(info.value)


@pytest.mark.parametrize("bad", ["", "1 fortnight", True, -1, "1.5MiB"])
def test_parse_size_rejects(bad: object) -> None:
    with pytest.raises(ScenarioError):
        parse_size(bad)


def test_line_index_resolves_tables_inside_arrays_and_the_reader_names_them() -> None:
    text = (
        "[[class]]\nname = 'a'\n\n[[class]]\nname = 'b'\n[class.machine]\n"
        "sockets = 0\n[[class.workload]]\nheap = 1\n"
    )
    lines = line_index(text)
    assert lines["class[1].name"] == 5 and lines["class[1].machine"] == 6
    assert lines["class[1].machine.sockets"] == 7 and lines["class[1].workload[0].heap"] == 9
    root = TableReader(tomllib.loads(text), "", lines)
    machine = root.array("class")[1].sub("machine")
    assert machine is not None
    with pytest.raises(ScenarioError) as info:
        machine.get("sockets", machine.int_(1, 8), 2)
    assert info.value.key == "class[1].machine.sockets" and info.value.line == 7
    with pytest.raises(ScenarioError) as info:
        root.array("class")[0].done()  # "name" was never read
    assert info.value.key == "class[0].name" and info.value.line == 2

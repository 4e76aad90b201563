"""The README's "Use it from Python" example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_use_it_from_python_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Use it from Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1
    exec(compile(blocks[0], str(README), "exec"), {})
    out = capsys.readouterr().out.splitlines()
    import sgxsim

    assert out[0] == f"{sgxsim.__version__} rfc-v2-teardown []"
    assert re.fullmatch(r"[0-9a-f]{32}", out[1])


def test_version_and_dir() -> None:
    import sgxsim

    assert re.match(r"\d+\.\d+", sgxsim.__version__)
    listed = dir(sgxsim)
    assert "__version__" in listed and set(sgxsim.__all__) <= set(listed)
    assert "importlib" not in listed and "TYPE_CHECKING" not in listed
    import sgxsim.sim

    for name in sgxsim.sim.__all__:
        assert getattr(sgxsim.sim, name) is not None, name

"""``sgxsim --help``, shell completion and ``validate`` import none of the heavy modules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("numpy", "matplotlib", "cryptography", "greenlet")

PROBE = """
import json, sys
from sgxsim.cli import main
try:
    main(sys.argv[1:], prog_name="sgxsim")
except SystemExit:
    pass
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {heavy})), file=sys.stderr)
"""


@pytest.mark.parametrize(
    ("args", "extra_env"),
    [
        (["--help"], {}),
        ([], {"_SGXSIM_COMPLETE": "bash_complete", "COMP_WORDS": "sgxsim ", "COMP_CWORD": "1"}),
        ([], {"_SGXSIM_COMPLETE": "bash_source"}),
        (["validate", str(ROOT / "examples" / "kexec.toml")], {}),
    ],
)
def test_no_heavy_import(args: list[str], extra_env: dict[str, str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **extra_env}
    code = PROBE.replace("{heavy}", repr(set(HEAVY)))
    res = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=False
    )
    loaded = json.loads(res.stderr.strip().splitlines()[-1])
    assert loaded == [], loaded
    assert res.stdout  # it did print help / completions / the plan

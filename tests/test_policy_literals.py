"""The issue 10 rule: no SVN policy string literal in src outside the enum's module.

Policies are :class:`sgxsim.kernel.policy.SvnPolicy` members and the what-if's name is
:data:`sgxsim.kernel.policy.WHAT_IF_POLICY`; code elsewhere uses those names, so a renamed policy
cannot leave a stale spelling behind. Docstrings and longer strings (the demo's TOML text, help
text) may mention a policy; a string constant that *is* a policy name may not. ``"none"`` is left
out (too common a word to tell apart); the flag ``only_if_svn_rises`` is spelled as a field and
scenario key where :class:`~sgxsim.kernel.svn.SvnConfig` and the scenario parser define it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from sgxsim.kernel.policy import WHAT_IF_POLICY, SvnPolicy

SRC = Path(__file__).resolve().parents[1] / "src" / "sgxsim"
#: Files allowed to spell a name, and which: the enum's module; the flag's TOML key.
ALLOWED = {
    "kernel/policy.py": None,  # every name
    "sim/scenario.py": {WHAT_IF_POLICY},  # ``machine.only_if_svn_rises``, a scenario key
    "kernel/svn.py": {WHAT_IF_POLICY},  # ``SvnConfig.only_if_svn_rises``, the flag's field name
}


def policy_literals(tree: ast.AST, names: set[str]) -> list[tuple[int, str]]:
    """(line, value) of each string constant in ``tree`` that equals one of ``names``."""
    return sorted(
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
    )


@pytest.mark.no_cover  # tokenizes src: no sgxsim code runs
def test_no_policy_literal_outside_the_policy_module() -> None:
    names = {p.value for p in SvnPolicy if p is not SvnPolicy.NONE} | {WHAT_IF_POLICY}
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        allowed = ALLOWED.get(rel, set())
        if allowed is None:
            continue
        for line, value in policy_literals(ast.parse(path.read_text(encoding="utf-8")), names):
            if value not in allowed:
                found.append(f"src/sgxsim/{rel}:{line}: {value!r}")
    assert found == [], "use SvnPolicy / WHAT_IF_POLICY instead of:\n" + "\n".join(found)


def test_the_check_sees_a_literal() -> None:
    """The scan flags a policy spelled out in code (and not one inside a longer string)."""
    names = {SvnPolicy.RFC_V2_TEARDOWN.value, WHAT_IF_POLICY}
    code = 'x = "rfc-v2-teardown"\ny = f"{x} or only_if_svn_rises"\nz = ("only_if_svn_rises",)\n'
    assert policy_literals(ast.parse(code), names) == [(1, "rfc-v2-teardown"), (3, WHAT_IF_POLICY)]

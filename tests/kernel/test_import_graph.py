"""The kernel package's import graph: acyclic at run time, and every import at the top of a file.

Linux's SGX driver shares its flags, constants and records through ``sgx.h``; here that is
:mod:`sgxsim.kernel.sgx`, so no kernel module needs another's code to get a constant, and the
modules form a DAG (``main`` on top, as the file that wires the others together). Imports under
``TYPE_CHECKING`` are excluded: they are the forward declarations (``struct sgx_encl;``) that
let the records name each other in annotations, and never run.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import grimp

KERNEL = Path(__file__).resolve().parents[2] / "src" / "sgxsim" / "kernel"


def _kernel_graph() -> tuple[grimp.ImportGraph, list[str]]:
    graph = grimp.build_graph("sgxsim", exclude_type_checking_imports=True, cache_dir=None)
    mods = sorted(m for m in graph.find_descendants("sgxsim.kernel"))
    return graph, mods


def test_kernel_modules_form_no_import_cycle() -> None:
    graph, mods = _kernel_graph()
    assert "sgxsim.kernel.sgx" in mods and "sgxsim.kernel.main" in mods
    cycles = [
        (a, b)
        for a, b in itertools.combinations(mods, 2)
        if graph.chain_exists(importer=a, imported=b) and graph.chain_exists(importer=b, imported=a)
    ]
    assert cycles == [], f"cyclic import pairs in sgxsim.kernel: {cycles}"


def test_import_graph_check_sees_function_level_imports() -> None:
    """The graph includes imports inside functions, so a hidden cycle would be caught."""
    graph, _ = _kernel_graph()
    # main imports encl at the top; a function-level import back would make a pair.
    assert graph.direct_import_exists(importer="sgxsim.kernel.main", imported="sgxsim.kernel.encl")
    assert not graph.chain_exists(importer="sgxsim.kernel.encl", imported="sgxsim.kernel.main")
    src = "def f() -> None:\n    from sgxsim.kernel.main import Kernel\n"
    nested = [n for n in ast.walk(ast.parse(src)) if isinstance(n, ast.ImportFrom)]
    assert _function_level_imports(ast.parse(src), src.splitlines()) == [(2, nested[0].module)]


def _function_level_imports(tree: ast.Module, lines: list[str]) -> list[tuple[int, str | None]]:
    """Imports inside a function body without a ``# lazy:`` comment saying why."""
    found = []
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Import | ast.ImportFrom):
                line = lines[node.lineno - 1]
                above = lines[node.lineno - 2] if node.lineno >= 2 else ""
                if "# lazy:" not in line and "# lazy:" not in above:
                    mod = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                    found.append((node.lineno, mod))
    return found


def test_kernel_modules_import_at_the_top() -> None:
    """No import inside a function unless a ``# lazy:`` comment says why."""
    offenders = {}
    for path in sorted(KERNEL.glob("*.py")):
        text = path.read_text()
        found = _function_level_imports(ast.parse(text), text.splitlines())
        if found:
            offenders[path.name] = found
    assert offenders == {}

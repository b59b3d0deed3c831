"""The supported 3D Slicer releases: Slicer 5.10 or later (Python 3.12); older ones get one clear message.

Slicer 5.8 and older bring Python 3.9. The module files and ``DiscVBRLib/compat.py`` are
compiled by that Python before any check can run, so they must keep to Python 3.9 syntax;
``discvbr`` itself needs Python 3.11 (``requires-python``) and is only imported after the check.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from DiscVBRLib import compat  # noqa: E402

MODULES = ("DiscSegmentation", "DiscRelaxometry", "DiscStatistics")


def test_old_slicer_gets_one_message_naming_the_release_to_install():
    with pytest.raises(ImportError) as info:
        compat.require_supported_python((3, 9, 10, "final", 0))
    message = str(info.value)
    assert "3D Slicer 5.10 or later" in message and "Python 3.9.10" in message and "\n" not in message
    compat.require_supported_python((3, 12, 10, "final", 0))
    compat.require_supported_python()  # the Python running the tests is supported


def test_minimum_python_is_the_package_requirement():
    required = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert tuple(int(v) for v in re.fullmatch(r">=(\d+)\.(\d+)", required).groups()) == compat.MINIMUM_PYTHON


def _annotations_use_union_operator(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        annotations = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            annotations = [a.annotation for a in [*node.args.args, *node.args.kwonlyargs] if a.annotation] + [node.returns]
        elif isinstance(node, ast.AnnAssign):
            annotations = [node.annotation]
        if any(isinstance(a, ast.BinOp) for a in annotations if a is not None):
            return True
    return False


@pytest.mark.parametrize("path", [*(f"{m}/{m}.py" for m in MODULES), "DiscVBRLib/__init__.py", "DiscVBRLib/compat.py"])
def test_files_an_old_slicer_compiles_keep_to_python_3_9(path):
    source = (REPO / path).read_text()
    tree = ast.parse(source, feature_version=(3, 9))  # match statements, except*, PEP 695... are refused
    future = any(isinstance(n, ast.ImportFrom) and n.module == "__future__" for n in tree.body)
    assert future or not _annotations_use_union_operator(tree), "X | Y annotations are evaluated on Python 3.9"


@pytest.mark.parametrize("module", MODULES)
def test_modules_check_the_python_before_importing_discvbr(module):
    tree = ast.parse((REPO / module / f"{module}.py").read_text())
    order = []
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == "require_supported_python":
            order.append("check")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "discvbr":
            order.append("discvbr")
        elif isinstance(node, ast.Import) and any(a.name.split(".")[0] == "discvbr" for a in node.names):
            order.append("discvbr")
    assert order and order[0] == "check" and "discvbr" in order


def test_package_uses_no_module_removed_in_python_3_12():
    """Slicer 5.10 runs Python 3.12: distutils, imp, asynchat, asyncore and smtpd are gone there."""
    removed = {"distutils", "imp", "asynchat", "asyncore", "smtpd"}
    found = set()
    for path in [*(REPO / "discvbr").rglob("*.py"), *(REPO / "DiscVBRLib").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found |= {f"{path.name}: {n}" for n in names if n.split(".")[0] in removed}
    assert found == set()

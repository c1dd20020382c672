"""Every declared runtime dependency is one the product imports, and nothing else is imported.

A dependency the product never uses is a defect (it costs every installer for nothing), and an
import of an undeclared package works on a developer's machine and fails on a fresh one.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: distribution name -> the module it is imported as, where they differ
IMPORT_NAMES = {"python-dateutil": "dateutil"}


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0].strip().lower() for spec in project["dependencies"]}
    return {IMPORT_NAMES.get(name, name) for name in names}


def _imported() -> set[str]:
    modules: set[str] = set()
    for path in (ROOT / "jobman_cli").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules


def test_every_declared_dependency_is_imported_by_the_product() -> None:
    unused = _declared() - _imported()
    assert not unused, f"declared in pyproject.toml but never imported by jobman_cli: {sorted(unused)}"


def test_the_product_imports_only_the_standard_library_and_declared_packages() -> None:
    third_party = {name for name in _imported() - {"jobman_cli"} if name not in sys.stdlib_module_names}
    # botocore comes with boto3 (its own dependency, versioned by it)
    undeclared = third_party - _declared() - {"botocore"}
    assert not undeclared, f"imported by jobman_cli but not declared in pyproject.toml: {sorted(undeclared)}"

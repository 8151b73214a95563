"""The import contracts of pyproject.toml (the layers of DESIGN.md, and no torch in config,
analysis or report) hold, and they fail when broken."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(src: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` with the project's contracts over the package found in ``src``."""
    return subprocess.run(
        [str(LINT_IMPORTS), str(ROOT / "pyproject.toml"), "--no-cache"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=src.parent,
        env={**os.environ, "PYTHONPATH": str(src)},
    )


def test_the_contracts_hold():
    result = lint_imports(ROOT / "src")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        # torch in an analysis module: the report could no longer be rebuilt without torch
        ("analysis/stats.py", "import torch", "lmablate.analysis is not allowed to import torch"),
        # torch reached indirectly: report -> model.transformer -> torch
        (
            "report/format.py",
            "from lmablate.model.transformer import LM",
            "lmablate.report is not allowed to import torch",
        ),
        # a lower layer reaching up
        (
            "model/norms.py",
            "from lmablate.training.summary import read_summary",
            "lmablate.model is not allowed to import lmablate.training",
        ),
    ],
)
def test_a_broken_contract_fails_the_lint(tmp_path, module, line, broken):
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "lmablate", src / "lmablate")
    path = src / "lmablate" / module
    path.write_text(path.read_text() + f"\n{line}\n")
    result = lint_imports(src)
    assert result.returncode != 0
    assert broken in result.stdout, result.stdout


def test_the_readme_architecture_table_matches_the_tree():
    readme = (ROOT / "README.md").read_text() + "\n\n"
    start = readme.index("| layer | package | owns |")
    rows = readme[start : readme.index("\n\n", start)].splitlines()[2:]
    packages: dict[str, set[str]] = {}  # package -> files its row names
    modules: set[str] = set()
    for row in rows:
        _, _, where, owns, _ = row.split("|")
        names = re.findall(r"`([\w/.]+)`", where)
        for name in names:
            if name.endswith("/"):
                packages[name.rstrip("/")] = set(re.findall(r"`(\w+\.py)`", owns))
            else:
                modules.add(name.removesuffix(".py"))
    package_dir = ROOT / "src" / "lmablate"
    on_disk = {p.name for p in package_dir.iterdir() if (p / "__init__.py").is_file()}
    assert set(packages) == on_disk
    for name, files in packages.items():
        assert files == {p.name for p in (package_dir / name).glob("*.py")} - {"__init__.py"}
    top = {p.stem for p in package_dir.glob("*.py")} - {"__init__", "__main__"}
    assert modules == top


def test_no_module_is_over_the_size_limit_and_the_check_catches_one(tmp_path):
    """The lint step's module-size check passes on the package and fails on a module over it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "module_sizes", ROOT / "tools" / "module_sizes.py"
    )
    sizes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sizes)
    assert sizes.oversized() == []
    (tmp_path / "big.py").write_text("x = 1\n" * (sizes.MAX_LINES + 1))
    (tmp_path / "small.py").write_text("x = 1\n")
    assert sizes.oversized(tmp_path) == [(tmp_path / "big.py", sizes.MAX_LINES + 1)]


def test_the_config_modules_import_each_other_without_a_circle():
    """Every import between lmablate.config modules, at the top or inside a function, points
    one way: the graph has no cycle."""
    import ast

    package = ROOT / "src" / "lmablate" / "config"
    edges: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text())
        targets = {
            node.module.rsplit(".", 1)[-1]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("lmablate.config.")
        }
        edges[path.stem] = targets
    visiting, done = set(), set()

    def visit(name: str, trail: list[str]) -> None:
        assert name not in visiting, f"import circle: {' -> '.join([*trail, name])}"
        if name in done:
            return
        visiting.add(name)
        for target in edges.get(name, ()):
            visit(target, [*trail, name])
        visiting.discard(name)
        done.add(name)

    for module in edges:
        visit(module, [])

"""Imports run one way, downward: each part of diffdac/ imports only the parts below it (and itself).

From the bottom: the shared root modules (errors, options, metrics, noise), network/, config.py,
learners/, run/, tools/, then the command line. envs/ and topologies/ stand apart and import
nothing of diffdac. A type-only import counts too: it is still an arrow a reader follows.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = {
    "diffdac.errors": 0,
    "diffdac.options": 0,
    "diffdac.metrics": 0,
    "diffdac.noise": 0,
    "diffdac.files": 0,
    "diffdac.network": 1,
    "diffdac.config": 2,
    "diffdac.learners": 3,
    "diffdac.run": 4,
    "diffdac.tools": 5,
    "diffdac.cli": 6,
    "diffdac.__main__": 7,
}


def _layer(module: str) -> int | None:
    """The layer of a diffdac module (by its longest known prefix), None outside diffdac."""
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return LAYERS[prefix]
    return None


def _imports(path: Path) -> list[str]:
    """Every module a file imports, at any depth (lazy imports inside functions included)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return names


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


PACKAGE_FILES = sorted(p for p in (ROOT / "diffdac").rglob("*.py") if p.name != "__init__.py" or p.parent.name != "diffdac")


@pytest.mark.parametrize("path", PACKAGE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_diffdac_module_imports_only_what_lies_below_it(path):
    mine = _layer(_module(path))
    assert mine is not None, f"{path} belongs to no layer: add its folder to LAYERS"
    upward = [name for name in _imports(path) if (_layer(name) or 0) > mine]
    assert upward == []


@pytest.mark.parametrize("package", ["envs", "topologies"])
def test_envs_and_topologies_know_nothing_of_diffdac(package):
    users = [str(p) for p in (ROOT / package).rglob("*.py") if any(n.split(".")[0] == "diffdac" for n in _imports(p))]
    assert users == []


def test_the_check_sees_an_upward_import(tmp_path):
    """The rule itself: a learners module importing the run would be caught."""
    fake = tmp_path / "x.py"
    fake.write_text("def f():\n    from diffdac.run.training import train\n")
    assert [n for n in _imports(fake) if (_layer(n) or 0) > LAYERS["diffdac.learners"]] != []


def test_the_public_api_loads_on_first_use_and_import_diffdac_loads_nothing():
    import subprocess
    import sys

    probe = (
        "import sys, diffdac; assert 'torch' not in sys.modules and 'diffdac.config' not in sys.modules; "
        "from diffdac import TrainConfig, train, load_policy; "
        "assert callable(diffdac.checkpoint.gather) and callable(diffdac.results.load_run); "
        "print(diffdac.__version__)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    from importlib import metadata

    assert out.stdout.strip() == metadata.version("diffdac")

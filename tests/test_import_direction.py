"""The import graph keeps its direction: the core imports neither branch, tasks never import methods or models,
and the two branches never import each other.

Checked twice: statically, every ``import`` statement of every module (also those inside functions); and at run
time, what importing each task module actually loads (a package's ``__init__`` runs too).
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What each package may not import (a module or anything below it). envs may use the policy branch's data
# formats (DP's replay buffer, the robomimic hdf5 reader and writer, rotations) and nothing else of it.
FORBIDDEN = {
    "drifting": ("drifting_policy", "drifting_image", "envs"),
    "envs": ("drifting_image", "drifting_policy"),
    "drifting_policy": ("drifting_image",),
    "drifting_image": ("drifting_policy", "envs"),
}
ALLOWED = {"envs": ("drifting_policy.data.replay_buffer", "drifting_policy.data.robomimic_hdf5",
                    "drifting_policy.data.rotation", "drifting_policy.data.sampler", "drifting_policy.errors")}


def imported_modules(path: Path):
    """(line, module) for every absolute import in the file."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def is_below(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def is_wrong(package: str, module: str) -> bool:
    """Whether ``package`` may not import ``module`` (the parent packages of an allowed module run too)."""
    allowed = ALLOWED.get(package, ())
    return (is_below(module, FORBIDDEN[package]) and not is_below(module, allowed)
            and not any(a.startswith(module + ".") for a in allowed))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_module_imports_against_the_direction(package):
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {module}"
             for path in sorted((ROOT / package).rglob("*.py"))
             for line, module in imported_modules(path)
             if is_wrong(package, module)]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("package", ["drifting", "envs"])
def test_importing_the_core_and_the_tasks_loads_nothing_against_the_direction(package):
    modules = sorted(".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                     for path in (ROOT / package).rglob("*.py"))
    script = f"import importlib, sys\nfor name in {modules!r}:\n    importlib.import_module(name)\nprint(*sys.modules)"
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    wrong = [module for module in out.stdout.split() if is_wrong(package, module)]
    assert not wrong, f"importing {package} loads {wrong}"

"""The installed package: every module imports in a fresh interpreter, every third-party import is a declared
dependency (so a package that merely happens to be installed cannot hide a missing one), and the console
script runs."""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import os
import re
import subprocess
import sys
from pathlib import Path


import srq
from conftest import console_script

SOURCE = Path(srq.__file__).resolve().parent
OPTIONAL = {"mamba_ssm"}  # imported inside try/except ImportError: a CUDA kernel used when present


def _imported_top_level_names() -> dict[str, str]:
    """Top-level names of the non-standard-library modules srq imports (or looks up with ``find_spec``),
    each with one file that does."""
    found: dict[str, str] = {}
    for path in sorted(SOURCE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "find_spec" and node.args \
                    and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "srq" and top not in sys.stdlib_module_names:
                    found.setdefault(top, str(path.relative_to(SOURCE)))
    return found


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_module_imports_in_a_fresh_interpreter():
    code = ("import importlib, pkgutil, srq\n"
            "names = [m.name for m in pkgutil.walk_packages(srq.__path__, 'srq.') if m.name != 'srq.__main__']\n"
            "for n in names: importlib.import_module(n)\n"
            "print(len(names))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) > 40  # the walk really saw the package


def test_every_third_party_import_is_a_declared_dependency():
    requires = metadata.requires("srq") or []
    declared = {_normalise(re.split(r"[\s;<>=!~\[(]", r, maxsplit=1)[0]) for r in requires if "extra ==" not in r}
    # an extra's packages (deploy: onnx, onnxruntime, openvino) are imported inside the functions that need them;
    # the fresh-interpreter test above, run by CI without the extras, checks that srq imports without them
    extras = {_normalise(re.split(r"[\s;<>=!~\[(]", r, maxsplit=1)[0]) for r in requires if "extra ==" in r}
    providers = metadata.packages_distributions()
    undeclared = []
    for module, where in _imported_top_level_names().items():
        if module in OPTIONAL:
            continue
        dists = {_normalise(d) for d in providers.get(module, [module])}
        if not dists & (declared | extras):
            undeclared.append(f"{module} (imported in {where}; provided by {', '.join(sorted(dists))})")
    assert not undeclared, f"imported but not declared in pyproject.toml dependencies: {undeclared}"
    assert {"torch", "typer", "numpy"} <= declared


def test_console_script_runs():
    proc = subprocess.run([console_script(), "--help"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    for command in ("eval", "quantize", "upscale", "demo"):
        assert command in proc.stdout

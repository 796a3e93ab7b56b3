"""Production code never imports the emulator (issue #11 item 3): every module outside
``payments/emulator/`` is read for imports of it, static and dynamic, and the whole app is
imported in a fresh interpreter to prove none is loaded."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
EMULATOR = "payments.emulator"
PRODUCTION = [ROOT / "app.py", *sorted((ROOT / "lenders").rglob("*.py"))] + sorted(
    path
    for path in (ROOT / "payments").rglob("*.py")
    if (ROOT / "payments" / "emulator") not in path.parents
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def names_emulator(name: str) -> bool:
    return name == EMULATOR or name.startswith(EMULATOR + ".")


def emulator_imports(source: str, module: str, is_package: bool = False) -> list[str]:
    """Each import of the emulator in ``source`` (the module ``module``), as written:
    ``import``, ``from … import`` (relative ones resolved) and ``importlib.import_module`` or
    ``__import__`` of a literal name, anywhere in the module, functions included."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if names_emulator(alias.name)]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            if any(names_emulator(target) for target in targets):
                found.append(f"from {base} import {', '.join(a.name for a in node.names)}")
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if (
                called in ("import_module", "__import__")
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
                and names_emulator(first.value)
            ):
                found.append(f"{called}({first.value!r})")
    return found


def test_the_walk_covers_the_production_code():
    names = {module_name(path) for path in PRODUCTION}
    assert {"app", "payments.cli", "payments.demo", "payments.daraja.client"} <= names
    assert "lenders.models" in names
    assert not any(names_emulator(name) for name in names)


@pytest.mark.parametrize(
    ("source", "module", "is_package"),
    [
        ("import payments.emulator.server", "payments.views", False),
        ("from payments.emulator import server", "payments.views", False),
        ("from payments import emulator", "payments.views", False),
        ("from .emulator.stk import push", "payments.views", False),
        ("from . import emulator", "payments", True),
        ("from ..emulator import cli", "payments.daraja.client", False),
        ("def f():\n    from payments.emulator.server import serve", "app", False),
        ("import importlib\nimportlib.import_module('payments.emulator.cli')", "app", False),
    ],
)
def test_the_walk_finds_every_way_of_importing_it(source, module, is_package):
    assert emulator_imports(source, module, is_package)


@pytest.mark.parametrize(
    "source",
    ["import payments.emulatorish", "from payments import demo", "from .daraja import client"],
)
def test_the_walk_leaves_other_imports_alone(source):
    assert emulator_imports(source, "payments.views") == []


def test_no_production_module_imports_the_emulator():
    offenders = {
        module_name(path): found
        for path in PRODUCTION
        if (
            found := emulator_imports(
                path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py"
            )
        )
    }
    assert offenders == {}


def test_building_the_app_and_importing_every_production_module_loads_no_emulator():
    modules = sorted(module_name(path) for path in PRODUCTION)
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "import app\n"
        "app.create_app({'TESTING': True, 'SQLALCHEMY_DATABASE_URI': 'sqlite://',"
        " 'SECRET_KEY': 'x'})\n"
        f"loaded = sorted(m for m in sys.modules if m == {EMULATOR!r}"
        f" or m.startswith({EMULATOR + '.'!r}))\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=os.environ.copy(),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_flask_command_group_is_registered_from_the_emulator_package():
    """``flask emulator …`` comes from the entry point, not from app.py."""
    [entry] = [ep for ep in metadata.entry_points(group="flask.commands") if ep.name == "emulator"]
    assert entry.value == "payments.emulator.cli:group"
    assert sorted(entry.load().commands) == ["demo-traffic", "serve"]

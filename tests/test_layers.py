"""The package layering is checked, not hoped for.

Every import statement in `syncd/` (module level, inside functions, under TYPE_CHECKING)
is resolved to the syncd package it names and compared with the layer rules below. The
same checker runs in `make lint`. To see it fail, add e.g. `from syncd.engine import cycle`
to `syncd/core/model.py` and run `make lint`; `test_checker_catches_a_forbidden_import`
builds such a case in a temporary tree.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "syncd"

# layer -> the syncd packages it may import (besides itself). `errors` and `logs` are the
# shared foundation; `sandbox` stands apart from everything else.
FOUNDATION = {"syncd", "syncd.errors", "syncd.logs"}
LOWER = {"syncd.core", "syncd.store", "syncd.config", "syncd.ultimo", "syncd.calendars"}
ALLOWED: dict[str, set[str]] = {
    "syncd.errors": {"syncd"},
    "syncd.logs": {"syncd"},
    "syncd.core": {"syncd.errors"},
    "syncd.config": FOUNDATION | {"syncd.core"},
    "syncd.store": FOUNDATION | {"syncd.core", "syncd.config"},
    "syncd.ultimo": FOUNDATION | {"syncd.core", "syncd.config", "syncd.store"},
    "syncd.calendars": FOUNDATION | {"syncd.core", "syncd.config"},
    "syncd.engine": FOUNDATION | LOWER,
    "syncd.service": FOUNDATION | LOWER | {"syncd.engine"},
    "syncd.commands": FOUNDATION | LOWER | {"syncd.engine", "syncd.service"},
    "syncd.sandbox": {"syncd"},
    "syncd.__main__": {"syncd.commands"},
}
# a module allowed more than its layer (by file, relative to the package's parent)
EXCEPTIONS = {"syncd/commands/demo.py": {"syncd.sandbox"}}
# what the pure core may import from outside syncd
CORE_STDLIB = {"__future__", "base64", "hashlib", "dataclasses", "datetime", "typing", "collections", "enum",
               "math", "itertools", "functools", "re", "abc", "zoneinfo"}


def layer_of(module: str) -> str:
    """The layer a dotted syncd module belongs to (`syncd.engine.cycle` -> `syncd.engine`)."""
    parts = module.split(".")
    if len(parts) == 1:
        return "syncd"
    return ".".join(parts[:2])


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in a file, relative ones resolved;
    `from syncd import x` counts as importing `syncd.x`."""
    name = module_name(path, root)
    is_pkg = path.name == "__init__.py"
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod == "syncd":
                found += [(node.lineno, f"syncd.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, mod))
    return found


def violations(root: Path) -> list[str]:
    """Every import that breaks the layer rules, as `file:line: what`."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        me = module_name(path, root)
        mine = layer_of(me)
        rel = path.relative_to(root.parent).as_posix()
        allowed = ALLOWED.get(mine, FOUNDATION) | {mine} | EXCEPTIONS.get(rel, set())
        for line, mod in imports_of(path, root):
            top = mod.split(".")[0]
            if top == "syncd":
                target = layer_of(mod)
                if mod == "syncd.__version__" or target == "syncd.__version__":
                    continue
                if target not in allowed:
                    problems.append(f"{rel}:{line}: {mine} may not import {mod}")
            elif mine == "syncd.core" and top not in CORE_STDLIB:
                problems.append(f"{rel}:{line}: the pure core may not import {mod}")
    return problems


def test_the_package_keeps_its_layers():
    assert violations(PACKAGE) == []


def test_every_package_says_what_it_holds_and_may_import():
    for init in PACKAGE.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 40, f"{init} has no docstring saying what the package is"


@pytest.mark.parametrize(("where", "line", "expected"), [
    ("core/model.py", "from syncd.engine import cycle", "syncd.core may not import syncd.engine"),
    ("core/model.py", "import httpx", "the pure core may not import httpx"),
    ("store/db.py", "from syncd.service.lock import acquire", "syncd.store may not import syncd.service.lock"),
    ("engine/cycle.py", "from syncd import commands", "syncd.engine may not import syncd.commands"),
    ("calendars/ews/backend.py", "from ...engine import executor", "syncd.calendars may not import syncd.engine"),
    ("commands/status.py", "from syncd.sandbox.ews import server", "syncd.commands may not import syncd.sandbox"),
    ("service/daemon.py", "    from syncd.commands.cli import main", "syncd.service may not import syncd.commands"),
])
def test_checker_catches_a_forbidden_import(tmp_path, where, line, expected):
    root = tmp_path / "syncd"
    for rel in ("__init__.py", "core/__init__.py", "core/model.py", "store/__init__.py", "store/db.py",
                "engine/__init__.py", "engine/cycle.py", "calendars/__init__.py", "calendars/ews/__init__.py",
                "calendars/ews/backend.py", "commands/__init__.py", "commands/status.py", "commands/demo.py",
                "service/__init__.py", "service/daemon.py", "sandbox/__init__.py", "sandbox/ews/__init__.py",
                "sandbox/ews/server.py"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("")
    (root / "commands/demo.py").write_text("from syncd.sandbox.ews import server\n")
    assert violations(root) == []           # the clean tree passes, demo's exception included
    body = f"def f():\n{line}\n" if line.startswith(" ") else f"{line}\n"
    (root / where).write_text(body)
    found = violations(root)
    assert len(found) == 1 and expected in found[0], found


def test_importing_the_core_loads_no_io_library():
    code = ("import sys, syncd.core.planner; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'sqlalchemy', 'httpx', 'exchangelib', "
            "'structlog', 'pydantic', 'yaml', 'apscheduler', 'psycopg', 'socket', 'sqlite3', 'urllib3', 'requests'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


if __name__ == "__main__":     # `python tests/test_layers.py`: the check alone, for `make lint`
    found = violations(PACKAGE)
    print("\n".join(found) or "layers: every import keeps to its layer")
    sys.exit(1 if found else 0)

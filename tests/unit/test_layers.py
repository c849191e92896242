"""The web layer goes through the service layer: no module of ``underway.web`` imports the store
or reaches for ``App.store``, so ownership cannot be bypassed by a route, stream or socket."""

from __future__ import annotations

import ast
from pathlib import Path

import underway.web

WEB = Path(underway.web.__file__).parent


def store_uses(path: Path) -> list[str]:
    """Where ``path`` imports the store or reads an attribute named ``store``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            if module.lstrip(".").split(".")[0] == "store" or module.startswith("underway.store"):
                found.append(f"{path.name}:{node.lineno}: from {module} import …")
            found += [
                f"{path.name}:{node.lineno}: import {alias.name}"
                for alias in node.names
                if alias.name == "store"
            ]
        elif isinstance(node, ast.Import):
            found += [
                f"{path.name}:{node.lineno}: import {a.name}"
                for a in node.names
                if a.name.startswith("underway.store")
            ]
        elif isinstance(node, ast.Attribute) and node.attr in ("store", "_store"):
            found.append(f"{path.name}:{node.lineno}: .{node.attr}")
    return found


def test_the_web_layer_never_touches_the_store() -> None:
    modules = sorted(WEB.glob("*.py"))
    assert len(modules) > 5
    assert [use for module in modules for use in store_uses(module)] == []


def test_the_check_finds_a_store_read(tmp_path: Path) -> None:
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text(
        "from ..store import JobFilter\n\nasync def f(api):\n    return await api.app.store.get('x')\n"
    )
    assert store_uses(sneaky) == ["sneaky.py:1: from ..store import …", "sneaky.py:4: .store"]

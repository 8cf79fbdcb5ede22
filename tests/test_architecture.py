"""The package layout keeps its promises (docs/architecture.md); import-linter checks the rest."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "app"
MAX_MODULE_LINES = 600


def modules() -> list[Path]:
    return sorted(APP.rglob("*.py"))


def test_no_module_is_over_600_lines() -> None:
    long = {
        str(path.relative_to(APP)): n
        for path in modules()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_the_core_imports_no_flask() -> None:
    found = []
    for path in (APP / "core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            found += [
                f"{path.name}: {n}"
                for n in names
                if n.split(".")[0] in {"flask", "werkzeug"}
                and not n.startswith("werkzeug.security")
            ]
    assert found == []


def test_only_the_lifecycle_changes_a_restarts_state() -> None:
    """`restart.state = ...` appears in app.core.lifecycle alone (its `transition`)."""
    writers = []
    for path in modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if (
                        isinstance(target, ast.Attribute)
                        and target.attr == "state"
                        and isinstance(target.value, ast.Name)
                        and target.value.id == "restart"
                    ):
                        writers.append(f"{path.relative_to(APP)}:{node.lineno}")
    assert [w for w in writers if not w.startswith("core/lifecycle.py")] == []
    assert writers, "the outbox's transition assigns the state"


def test_respawn_serve_does_not_load_the_simulator() -> None:
    probe = (
        "import sys; from app.cli import main; "
        "main.get_command(None, 'serve'); "
        "loaded = sorted(m for m in sys.modules if m.startswith(('app.simulator', 'app.demo'))); "
        "print(','.join(loaded))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""

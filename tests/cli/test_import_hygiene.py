"""The headless side of crmctl never imports Textual: `crmctl check` runs from cron on bare hosts."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = ("textual", "rich")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_and_checks_never_import_textual_or_screens() -> None:
    offenders = []
    for folder in ("crmctl", "checks"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if path.name == "cli.py":
                continue  # the composition root imports screens lazily, inside `tui`
            bad = _imports(path) & {*FORBIDDEN, "screens"}
            if bad:
                offenders.append(f"{path.relative_to(REPO)}: {sorted(bad)}")
    assert offenders == []


def test_core_never_imports_checks() -> None:
    offenders = [
        str(p.relative_to(REPO))
        for p in (REPO / "crmctl").rglob("*.py")
        if p.name != "cli.py" and "checks" in _imports(p)
    ]
    assert offenders == []


def test_crmctl_check_runs_without_loading_textual(demo_config: Path) -> None:
    script = (
        "import sys\n"
        "from crmctl.cli import main\n"
        f"code = main(['check', '--config', {str(demo_config)!r}, '--format', 'json', '--only', 'dynamics.whoami'])\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich', 'screens'))\n"
        "print('LOADED', loaded, file=sys.stderr)\n"
        "sys.exit(0 if not loaded else 99)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "LOADED []" in proc.stderr

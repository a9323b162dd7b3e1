"""Every command's --help carries an example, and --help stays instant (no FastAPI, TensorFlow, OpenCV)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import typer.main

from dedup.cli import app

from helpers import ROOT


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, command in group.commands.items():
        out.append((*prefix, name))
        if hasattr(command, "commands"):  # a group of sub-commands (ignore, cache)
            out += _commands(command, (*prefix, name))
    return out


def test_every_command_help_has_an_example(cli) -> None:
    commands = _commands(typer.main.get_group(app))
    assert ("review",) in commands and ("ignore", "list") in commands and ("ignore", "clear") in commands
    for command in commands:
        result = cli(*command, "--help")
        assert result.exit_code == 0, (command, result.output)
        assert "Example:" in result.stdout, command


def test_help_does_not_import_the_server_or_the_models() -> None:
    code = (
        "import sys\nfrom dedup.cli import app\n"
        "heavy = [m for m in ('fastapi', 'uvicorn', 'tensorflow', 'cv2', 'sklearn') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True, timeout=120
    )
    assert out.stdout.strip() == ""

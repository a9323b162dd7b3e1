"""Fixtures of the review tests (helpers in reviewtools.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reviewtools import scan_folder


@pytest.fixture
def scanned(tmp_path: Path) -> tuple[Path, Path, dict[str, list[str]]]:
    """``(photos folder, scan.json, group name -> paths)``: four groups scanned with keep.policy path."""
    return scan_folder(tmp_path)

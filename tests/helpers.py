"""Small helpers shared by test files."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def tree_state(root: Path) -> dict[str, tuple[str, str]]:
    """Every entry under ``root`` (not following symlinks): relative path -> (kind, sha256 or link target)."""
    state: dict[str, tuple[str, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                state[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                state[rel] = ("dir", "")
            else:
                state[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest())
    return state


def shared_data() -> Path:
    """The project's shared real photos (``../shared/data``); ``DEDUP_SHARED_DATA`` overrides."""
    override = os.environ.get("DEDUP_SHARED_DATA")
    return Path(override) if override else Path(__file__).resolve().parents[1].parent / "shared" / "data"

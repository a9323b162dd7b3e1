"""Small helpers shared by test files."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import sys
from pathlib import Path
from typing import Any

#: The project's root folder (where pyproject.toml is).
ROOT = Path(__file__).resolve().parents[1]
#: The system Chromium and chromedriver the browser tests drive (nothing is downloaded).
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def skip_or_fail_without_browser(chromium: str = CHROMIUM, chromedriver: str = CHROMEDRIVER) -> None:
    """Skip (developer machine) or fail (``CI=true``) when Chromium, chromedriver or selenium is missing."""
    import pytest

    missing = [p for p in (chromium, chromedriver) if not os.access(p, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[dev]')")
    if missing:
        message = (
            f"headless browser test needs {', '.join(missing)} (apt-get install chromium chromium-driver)"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


def console_errors(driver: Any) -> list[str]:
    """The browser console's errors so far (selenium driver with ``goog:loggingPrefs``)."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


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
    return Path(override) if override else ROOT.parent / "shared" / "data"


# A process started with ``killed_at(step, n)`` as its first ``-c`` code SIGKILLs itself right after the
# n-th durable ``step`` of apply/undo (dedup.actions.fileops.set_checkpoint); the rest of the code runs as
# usual. This is how the crash tests stop a real run at an exact point.
_KILL_PRELUDE = """
import os, signal
from dedup.actions import fileops
_seen = {{}}
def _hook(step, want={step!r}, n={n}):
    if step == want:
        _seen[step] = _seen.get(step, 0) + 1
        if _seen[step] == n:
            os.kill(os.getpid(), signal.SIGKILL)
fileops.set_checkpoint(_hook)
"""


def killed_at(step: str, n: int) -> str:
    """Python code that installs a checkpoint hook killing the process at the ``n``-th ``step``."""
    return _KILL_PRELUDE.format(step=step, n=n)


_PAUSE_PRELUDE = """
import os, time
from dedup.actions import fileops
_seen = {{}}
def _hook(step, want={step!r}, n={n}):
    if step == want:
        _seen[step] = _seen.get(step, 0) + 1
        if _seen[step] == n:
            open({marker!r}, "w").close()
            while not os.path.exists({go!r}):
                time.sleep(0.05)
fileops.set_checkpoint(_hook)
"""


def paused_at(step: str, n: int, marker: Path, go: Path) -> str:
    """Python code that installs a checkpoint hook pausing the process at the ``n``-th ``step``: it creates
    ``marker`` and waits until ``go`` exists (a run held half-way, for the concurrency tests)."""
    return _PAUSE_PRELUDE.format(step=step, n=n, marker=str(marker), go=str(go))


def cli_command(*args: str, kill: str | None = None, prelude: str = "") -> list[str]:
    """``python -c ...`` running ``dedup ARGS`` in a fresh process, killed at ``kill`` ("step:N") if given,
    after the Python code ``prelude`` (e.g. :func:`paused_at`)."""
    code = prelude + (killed_at(kill.split(":")[0], int(kill.split(":")[1])) if kill else "")
    code += "\nimport sys\nfrom dedup.cli import main\nsys.argv = ['dedup', *sys.argv[1:]]\nmain()\n"
    return [sys.executable, "-c", code, *args]


# ---------------------------------------------------------------------- hand-written reports of plain files


def tiny_png(seed: int) -> bytes:
    """A valid 2x2 PNG whose colours depend on ``seed`` (a few dozen bytes)."""
    from PIL import Image

    rng = random.Random(seed)
    image = Image.new("RGB", (2, 2))
    image.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(4)])  # type: ignore[misc]
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def write(path: Path, size: int, seed: int, mtime: float | None = None) -> Path:
    """A file of ``size`` bytes whose content is recognised as an image (planning checks that every file
    it acts on is one): a tiny PNG followed by random bytes, as long as ``size`` allows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    head = tiny_png(seed)
    tail = random.Random(seed).randbytes(max(0, size - len(head)))
    path.write_bytes((head + tail)[:size] if size >= len(head) else random.Random(seed).randbytes(size))
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def member(path: Path, width: int = 100, height: int = 100) -> dict[str, Any]:
    st = os.stat(path)
    return {
        "path": str(path),
        "similarity_to_keep": 0.99,
        "bytes": st.st_size,
        "width": width,
        "height": height,
        "mtime": st.st_mtime,
    }


def make_dataset(root: Path, n_groups: int = 3, per_group: int = 3, n_unique: int = 2) -> dict[str, Any]:
    """Files under ``root`` in sub-folders, and a report whose groups are listed by hand.

    Group g has ``per_group + (n_groups - g)`` members (so sizes differ); its first member has the largest
    resolution and is the kept one. Two groups share a base name to exercise suffixes in group folders.
    """
    groups, images, seed = [], [], 0
    for g in range(n_groups):
        members = []
        for j in range(per_group + (n_groups - 1 - g)):
            seed += 1
            sub = "a" if j % 2 == 0 else "b/c"
            path = write(root / sub / f"g{g}_{j}.jpg", 1000 + 37 * seed, seed, mtime=1_600_000_000 + seed)
            members.append(member(path, 200 - j, 100))
        groups.append({"id": g + 1, "keep": members[0]["path"], "members": members})
        images += [{k: m[k] for k in ("path", "bytes", "mtime", "width", "height")} for m in members]
    for u in range(n_unique):
        seed += 1
        path = write(root / "u" / f"unique_{u}.png", 500 + seed, seed)
        images.append({k: v for k, v in member(path).items() if k != "similarity_to_keep"})
    return {
        "version": 1,
        "paths": [str(root)],
        "params": {"keep": {"policy": "resolution"}},
        "groups": groups,
        "images": images,
        "skipped": [],
    }


def snapshot(*roots: Path) -> dict[str, Any]:
    """Every file, link and folder under ``roots``: sha256 of files, target of links."""
    out: dict[str, Any] = {}
    for root in roots:
        if not root.exists():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            for d in dirnames:
                p = os.path.join(dirpath, d)
                out[p] = ("link", os.readlink(p)) if os.path.islink(p) else "dir"
            for f in filenames:
                p = os.path.join(dirpath, f)
                if os.path.islink(p):
                    out[p] = ("link", os.readlink(p))
                else:
                    out[p] = (hashlib.sha256(Path(p).read_bytes()).hexdigest(), os.stat(p).st_mtime)
    return out


def non_kept(report: dict[str, Any]) -> list[str]:
    return sorted(m["path"] for g in report["groups"] for m in g["members"] if m["path"] != g["keep"])


def records(manifest: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]


def shared_models() -> Path:
    """The small real ImageNet networks (``../shared/models``); ``DEDUP_SHARED_MODELS`` overrides."""
    override = os.environ.get("DEDUP_SHARED_MODELS")
    return Path(override) if override else ROOT.parent / "shared" / "models"

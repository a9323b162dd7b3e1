"""The ignore list: pairs of images a person marked "not a duplicate", which later scans never group again.

File: ``ignore.jsonl`` in the state folder (``ignore.file: auto`` = ``$XDG_STATE_HOME/dedup/ignore.jsonl``,
else ``~/.local/state/dedup/ignore.jsonl``), JSON lines, one pair per line::

    {"version": 1, "a": {"path": "/photos/x.jpg", "size": 81234, "blake2b": "5f0c..."},
     "b": {"path": "/photos/y.jpg", "size": 80111, "blake2b": "91aa..."},
     "added": "2026-11-21T12:00:00+00:00", "note": "dedup review /work/r.json"}

A pair is identified by the *content* of its two files (size + blake2b-128 digest of the bytes, as in the
feature cache): it still applies after the files are moved or renamed, to byte-identical copies of them,
and no longer applies to a file whose bytes changed (it deserves a fresh look). ``path`` is for people.
Lines that cannot be read are left out (and counted in :attr:`IgnoreList.problems`); the file is rewritten
whole, atomically (temporary file, fsync, rename), under an advisory lock, on every change.

How a scan honours it (:func:`scan_rules`): an ignored pair is never an edge of the duplicate graph
(:class:`dedup.verify.Verifier` decides it ``ignored`` without looking further), and the chaining guard of
:func:`dedup.cluster.form_groups` never leaves both images of an ignored pair in one group, however they
are linked through others (:func:`keep_apart`).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from dedup.cache import content_digest
from dedup.config import Config, IgnoreConfig
from dedup.errors import InputError

FILE_NAME = "ignore.jsonl"
FORMAT_VERSION = 1

#: ``mask(a, b)`` -> bool array: True where the pair ``(a[k], b[k])`` (image indices) is listed.
PairMask = Callable[[np.ndarray, np.ndarray], np.ndarray]
WarnFn = Callable[[str], None]

_LOCK = threading.Lock()


class _HasFile(Protocol):
    @property
    def path(self) -> str: ...
    @property
    def size(self) -> int: ...


def default_path() -> Path:
    """``$XDG_STATE_HOME/dedup/ignore.jsonl`` (``~/.local/state/dedup/ignore.jsonl`` without it)."""
    xdg = os.environ.get("XDG_STATE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "state"
    return base / "dedup" / FILE_NAME


def ignore_path(cfg: IgnoreConfig) -> Path | None:
    """The ignore list a configuration points to (``ignore.file``), or None for ``none``."""
    if cfg.file == "none":
        return None
    return default_path() if cfg.file == "auto" else Path(cfg.file).expanduser().absolute()


@dataclass(frozen=True)
class Side:
    """One image of an ignored pair: its path when marked, and its content identity (size, digest)."""

    path: str
    size: int
    digest: str

    @property
    def identity(self) -> tuple[int, str]:
        return (self.size, self.digest)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "blake2b": self.digest}


@dataclass(frozen=True)
class IgnoredPair:
    """A pair marked "not a duplicate"."""

    a: Side
    b: Side
    added: str = ""
    note: str | None = None

    @property
    def key(self) -> frozenset[tuple[int, str]]:
        return frozenset((self.a.identity, self.b.identity))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": FORMAT_VERSION, "a": self.a.to_dict(), "b": self.b.to_dict()}
        out["added"] = self.added
        if self.note:
            out["note"] = self.note
        return out


def side_of(path: str) -> Side:
    """The :class:`Side` of a file as it is now.

    Raises:
        InputError: the file cannot be read.
    """
    p = os.path.abspath(path)
    try:
        return Side(p, os.stat(p).st_size, content_digest(p))
    except OSError as e:
        raise InputError(f"cannot read {p}: {e.strerror or e}") from e


def _parse(line: str) -> IgnoredPair:
    d = json.loads(line)
    sides = []
    for key in ("a", "b"):
        s = d[key]
        path, size, digest = s["path"], s["size"], s["blake2b"]
        if not isinstance(path, str) or not isinstance(size, int) or not isinstance(digest, str):
            raise ValueError("bad side")
        sides.append(Side(path, size, digest))
    note = d.get("note")
    return IgnoredPair(sides[0], sides[1], str(d.get("added", "")), note if isinstance(note, str) else None)


class IgnoreList:
    """The ignore list file at ``path`` (which need not exist yet).

    Attributes:
        path: the file.
        problems: lines of the last :meth:`load` that could not be read (left out).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.problems = 0

    @classmethod
    def from_config(cls, config: Config) -> IgnoreList | None:
        """The ignore list of ``config`` (``ignore.file``), or None when it is turned off."""
        path = ignore_path(config.ignore)
        return None if path is None else cls(path)

    def load(self) -> list[IgnoredPair]:
        """Every readable pair, in file order, each pair once.

        Raises:
            InputError: the file exists but cannot be read.
        """
        self.problems = 0
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read the ignore list {self.path}: {e}") from e
        pairs: dict[frozenset[tuple[int, str]], IgnoredPair] = {}
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                pair = _parse(line)
            except (ValueError, KeyError, TypeError):
                self.problems += 1
                continue
            pairs.setdefault(pair.key, pair)
        return list(pairs.values())

    def add(self, pairs: Sequence[tuple[str, str]], *, note: str | None = None) -> int:
        """List the pairs of files (by their current content); returns how many were new.

        Raises:
            InputError: a file cannot be read, or the list cannot be written.
        """
        new = [(side_of(a), side_of(b)) for a, b in pairs if os.path.abspath(a) != os.path.abspath(b)]
        added = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self._locked():
            current = self.load()
            known = {p.key for p in current}
            fresh = []
            for a, b in new:
                pair = IgnoredPair(a, b, added, note)
                if pair.key not in known and a.identity != b.identity:
                    known.add(pair.key)
                    fresh.append(pair)
            if fresh:
                self._write(current + fresh)
        return len(fresh)

    def remove(self, pairs: Sequence[tuple[str, str]]) -> int:
        """Unlist the pairs of files (matched by content, or by both paths when a file changed or is
        gone); returns how many entries were removed."""
        keys: set[frozenset[tuple[int, str]]] = set()
        paths: set[frozenset[str]] = set()
        for a, b in pairs:
            paths.add(frozenset((os.path.abspath(a), os.path.abspath(b))))
            with contextlib.suppress(InputError):
                keys.add(frozenset((side_of(a).identity, side_of(b).identity)))
        with self._locked():
            current = self.load()
            kept = [p for p in current if p.key not in keys and frozenset((p.a.path, p.b.path)) not in paths]
            if len(kept) != len(current):
                self._write(kept)
        return len(current) - len(kept)

    def clear(self) -> int:
        """Delete the file; returns how many pairs it held.

        Raises:
            InputError: it cannot be deleted.
        """
        with self._locked():
            n = len(self.load())
            try:
                self.path.unlink(missing_ok=True)
            except OSError as e:
                raise InputError(f"cannot delete the ignore list {self.path}: {e.strerror or e}") from e
        return n

    def mask(self, images: Sequence[_HasFile]) -> PairMask | None:
        """The listed pairs among ``images`` as a :data:`PairMask` over their indices, or None when none
        applies. Only images whose size equals a listed file's are read (to digest their bytes)."""
        listed = self.load()
        if not listed:
            return None
        sizes = {s.size for p in listed for s in (p.a, p.b)}
        candidates = [i for i, im in enumerate(images) if im.size in sizes]

        def digest(i: int) -> str | None:
            try:
                return content_digest(images[i].path)
            except OSError:
                return None

        by_identity: dict[tuple[int, str], list[int]] = {}
        with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="dedup-ign") as pool:
            for i, d in zip(candidates, pool.map(digest, candidates), strict=True):
                if d is not None:
                    by_identity.setdefault((images[i].size, d), []).append(i)
        pairs: set[tuple[int, int]] = set()
        for p in listed:
            for i in by_identity.get(p.a.identity, ()):
                for j in by_identity.get(p.b.identity, ()):
                    if i != j:
                        pairs.add((min(i, j), max(i, j)))
        if not pairs:
            return None
        return pair_mask(pairs)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """This process's lock and an advisory ``flock`` on ``<file>.lock`` (where the OS has it)."""
        with _LOCK:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                handle = open(f"{self.path}.lock", "a+b")  # noqa: SIM115 - held across the yield
            except OSError as e:
                raise InputError(f"cannot use the ignore list {self.path}: {e.strerror or e}") from e
            try:
                with contextlib.suppress(ImportError, OSError):
                    import fcntl

                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
                yield
            finally:
                handle.close()

    def _write(self, pairs: Sequence[IgnoredPair]) -> None:
        text = "".join(json.dumps(p.to_dict(), ensure_ascii=False) + "\n" for p in pairs)
        folder = self.path.parent
        tmp = ""
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=folder)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            tmp = ""
            with contextlib.suppress(OSError):
                dfd = os.open(folder, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        except OSError as e:
            raise InputError(f"cannot write the ignore list {self.path}: {e.strerror or e}") from e
        finally:
            if tmp:
                Path(tmp).unlink(missing_ok=True)


def pair_mask(pairs: set[tuple[int, int]]) -> PairMask:
    """A :data:`PairMask` that is True for the index pairs in ``pairs`` (stored as ``(low, high)``)."""

    def mask(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        lo, hi = np.minimum(a, b).tolist(), np.maximum(a, b).tolist()
        return np.array([(x, y) in pairs for x, y in zip(lo, hi, strict=True)], dtype=bool)

    return mask


def either(*masks: PairMask | None) -> PairMask | None:
    """A :data:`PairMask` that is True where any of ``masks`` is (None when all are None)."""
    real = [m for m in masks if m is not None]
    if not real:
        return None
    if len(real) == 1:
        return real[0]

    def mask(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        out = np.zeros(len(a), dtype=bool)
        for m in real:
            out |= m(a, b)
        return out

    return mask


def scan_rules(images: Sequence[_HasFile], config: Config, warn: WarnFn | None = None) -> PairMask | None:
    """The ignore list's pairs among a scan's images (None without an ignore list or listed pairs).

    An unreadable ignore list is a warning, not a failure: the scan goes on without it.
    """
    listing = IgnoreList.from_config(config)
    if listing is None:
        return None
    try:
        mask = listing.mask(images)
    except InputError as e:
        if warn:
            warn(f"{e}; scanning without it")
        return None
    if listing.problems and warn:
        warn(f"the ignore list {listing.path} has {listing.problems} unreadable lines; they are left out")
    return mask


def keep_apart(members: Sequence[int], keep: int, apart: PairMask) -> tuple[list[int], list[int]]:
    """Split a group so that no two of its images form an ignored pair.

    ``members`` are in order of preference (the kept image first, then by decreasing similarity to it);
    each member stays unless it forms a pair with one that already stays.

    Returns:
        ``(stay, go)``.
    """
    stay: list[int] = [keep]
    go: list[int] = []
    for m in members:
        if m == keep:
            continue
        others = np.asarray(stay, dtype=np.int64)
        if apart(np.full(len(others), m, dtype=np.int64), others).any():
            go.append(m)
        else:
            stay.append(m)
    return stay, go

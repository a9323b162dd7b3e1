"""Persistent feature cache: one SQLite file, keyed by file identity and by extractor identity.

Format (``features.sqlite3`` in the cache folder, SQLite in WAL mode, ``PRAGMA user_version`` =
:data:`SCHEMA_VERSION`):

* ``extractors(id, identity)``: ``identity`` is the canonical JSON of :func:`extractor_identity` (model name,
  weights file sha256 or seed, pooling, input size, hash size, preprocessing version, dim).
* ``features(extractor, path, size, mtime_ns, content, width, height, vector, mirrored, checksum)``: one row
  per (extractor, absolute path). ``vector`` / ``mirrored`` are little-endian float32 blobs of ``dim``
  values (``mirrored`` NULL when the scan that wrote the row had mirroring off); ``content`` is the blake2b
  (128-bit) digest of the file's bytes; ``checksum`` is a blake2b digest of every other column, so a
  garbled row is detected and treated as a miss, never returned.
* ``keypoints(params, path, size, mtime, ...)``, ``decisions(params, a, b, evidence)``,
  ``candidates(key, pairs)`` and ``facts(params, path, size, mtime, value)``: what the grouping stage
  computed (:class:`VerifyCache`), keyed by every parameter that shapes it and by the files' path, size and
  mtime, each row with its own checksum.

A row is used when its extractor identity is the current one, its path, size and ``mtime_ns`` equal the
file's, (for a mirrored scan) it holds the mirrored vector, and its checksum verifies. A file that is not
found by path but whose bytes (size + content digest) equal a cached row's (a moved, renamed or copied
file) reuses that row's vectors. Anything else is a miss and is extracted again, then written back in
small transactions, so a scan killed mid-way keeps what it finished and never leaves half a row.

A cache file that SQLite cannot read (truncated, garbled, not a database) is moved aside to
``<name>.corrupt`` and rebuilt from scratch; cache errors never fail a scan (the caller gets a warning).
Library code never prints: warnings go to the ``warn`` callback.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from dedup.config import CacheConfig
from dedup.errors import CacheError
from dedup.images import open_regular

WarnFn = Callable[[str], None]

SCHEMA_VERSION = 4  # 2 added keypoints and decisions, 3 candidates, 4 facts (older files: upgraded in place)
FILENAME = "features.sqlite3"
_CHUNK = 500  # parameters per SELECT ... IN (...) (SQLite's limit is 999 on old builds)
_BUSY_TIMEOUT_S = 30.0

# info() keys that define what a vector means; everything else (file paths, fallback notes) is not identity.
_IDENTITY_KEYS = (
    "name",
    "weights",
    "weights_sha256",
    "seed",
    "pooling",
    "input_size",
    "hash_size",
    "hue_bins",
    "dim",
    "precision",
    "views",  # the views stored side by side in each row (dedup.pipeline._layout): image, mirror, rotations
)


# Identity keys only some extractors have (a saved model's bytes, a MobileNet's width, an ONNX tensor).
_OPTIONAL_IDENTITY_KEYS = ("model_sha256", "alpha", "output", "layout")


def default_dir() -> Path:
    """``$XDG_CACHE_HOME/dedup``, or ``~/.cache/dedup`` when XDG_CACHE_HOME is unset or not absolute."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "dedup"


def cache_dir(cfg: CacheConfig) -> Path:
    """The cache folder a configuration points to (``cache.dir``; ``auto`` = :func:`default_dir`)."""
    return default_dir() if cfg.dir == "auto" else Path(cfg.dir).expanduser().absolute()


def extractor_identity(info: dict[str, Any]) -> str:
    """Canonical JSON of the parts of an extractor's ``info()`` that determine its vectors.

    Two extractors with the same identity produce the same vector for the same image; anything that changes
    vectors (model, weights bytes, pooling, input size, preprocessing version) changes the identity.
    ``weights_sha256`` identifies a weights file by content, so moving the file keeps the cache valid.
    """
    ident = {k: info.get(k) for k in _IDENTITY_KEYS}
    ident["preprocessing"] = info.get("preprocessing")
    for key in _OPTIONAL_IDENTITY_KEYS:  # only where present: other extractors' identities stay as they were
        if key in info:
            ident[key] = info[key]
    if ident.get("weights_sha256"):
        ident["weights"] = None  # the path of a weights file does not matter, its content does
    return json.dumps(ident, sort_keys=True, separators=(",", ":"))


def content_digest(path: str) -> str:
    """blake2b (128-bit) hex digest of a file's bytes (raises OSError when unreadable or not a regular
    file: a FIFO swapped in after discovery is never read)."""
    digest = hashlib.blake2b(digest_size=16)
    with open_regular(path) as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Entry:
    """Cached facts of one file for one extractor.

    Attributes:
        width: full width in pixels after EXIF orientation.
        height: full height in pixels after EXIF orientation.
        vector: float32 array of shape (dim,), L2-normalised.
        mirrored: float32 array of shape (dim,) of the mirror image, or None.
        content: blake2b digest of the file's bytes, or None.
    """

    width: int
    height: int
    vector: np.ndarray
    mirrored: np.ndarray | None
    content: str | None


@dataclass(frozen=True)
class Row:
    """A row to store: the file's identity, facts and vectors."""

    path: str
    size: int
    mtime_ns: int
    content: str | None
    width: int
    height: int
    vector: np.ndarray
    mirrored: np.ndarray | None


def storable(path: str) -> bool:
    """Whether ``path`` can be a key of the cache: SQLite stores UTF-8 text, so a file whose name is not
    valid UTF-8 (``x\\xff.jpg``, held by Python as a surrogate escape) is scanned without the cache."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _blob(v: np.ndarray | None) -> bytes | None:
    return None if v is None else np.ascontiguousarray(v, dtype="<f4").tobytes()


def _checksum(
    path: str,
    size: int,
    mtime_ns: int,
    content: str | None,
    width: int,
    height: int,
    vector: bytes,
    mirrored: bytes | None,
) -> bytes:
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{path}\0{size}\0{mtime_ns}\0{content}\0{width}\0{height}\0".encode("utf-8", "surrogatepass"))
    h.update(vector)
    h.update(b"\1" if mirrored is None else b"\2" + mirrored)
    return h.digest()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS extractors (
    id INTEGER PRIMARY KEY,
    identity TEXT NOT NULL UNIQUE,
    dim INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS features (
    extractor INTEGER NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    content TEXT,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    vector BLOB NOT NULL,
    mirrored BLOB,
    checksum BLOB NOT NULL,
    PRIMARY KEY (extractor, path)
);
CREATE INDEX IF NOT EXISTS features_by_content ON features (extractor, size, content);
CREATE TABLE IF NOT EXISTS keypoints (
    params TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    points BLOB NOT NULL,
    descriptors BLOB NOT NULL,
    checksum BLOB NOT NULL,
    PRIMARY KEY (params, path)
);
CREATE TABLE IF NOT EXISTS candidates (
    key TEXT PRIMARY KEY,
    pairs BLOB NOT NULL,
    checksum BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS facts (
    params TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    value TEXT NOT NULL,
    checksum BLOB NOT NULL,
    PRIMARY KEY (params, path)
);
CREATE TABLE IF NOT EXISTS decisions (
    params TEXT NOT NULL,
    a TEXT NOT NULL,
    b TEXT NOT NULL,
    evidence TEXT NOT NULL,
    checksum BLOB NOT NULL,
    PRIMARY KEY (params, a, b)
);
"""


_S = TypeVar("_S", bound="_Store")


class _Store:
    """One connection to the cache file and what every user of it shares: opening (a damaged file is moved
    aside and rebuilt once), and failures that disable the cache for the rest of the scan with one warning
    instead of failing it. Subclasses set up their own state in :meth:`_ready`."""

    def __init__(self, path: Path, warn: WarnFn | None = None) -> None:
        self.path = path
        self.warn = warn
        self.conn_: sqlite3.Connection | None = None
        self.disabled_reason_: str | None = None
        self.rebuilt_ = False

    @staticmethod
    def _file(folder: Path) -> Path:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CacheError(f"cannot create the cache folder {folder}: {e.strerror or e}") from e
        return folder / FILENAME

    def _ready(self) -> None:
        """Called after each successful connect (e.g. to look up the extractor's row)."""

    def _connect(self) -> None:
        for attempt in range(2):
            try:
                self.conn_ = _connect(self.path)
                self._ready()
                return
            except sqlite3.DatabaseError as e:  # "file is not a database", "malformed", ...
                self._close_quietly()
                if attempt == 0 and _is_corruption(e) and not self.rebuilt_:
                    self.rebuilt_ = True
                    _move_aside(self.path)
                    self._warn(f"the feature cache {self.path} was damaged ({e}); it was rebuilt")
                    continue
                self._disable(e)
                return

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._close_quietly()

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def enabled(self) -> bool:
        return self.conn_ is not None and self.disabled_reason_ is None

    def _conn(self) -> sqlite3.Connection:
        if self.conn_ is None:
            raise sqlite3.OperationalError("cache is closed")
        return self.conn_

    def _warn(self, message: str) -> None:
        if self.warn is not None:
            self.warn(message)

    def _disable(self, e: BaseException) -> None:
        self.disabled_reason_ = str(e) or type(e).__name__
        self._close_quietly()
        self._warn(
            f"the feature cache {self.path} cannot be used ({self.disabled_reason_}); scanning without it"
        )

    def _fail(self, e: sqlite3.DatabaseError) -> None:
        """A failure while in use: a damaged file is moved aside and a fresh one started (once per scan);
        any other failure (locked, read-only, disk full) turns the cache off for the rest of the scan."""
        self._close_quietly()
        if _is_corruption(e) and not self.rebuilt_:
            self.rebuilt_ = True
            _move_aside(self.path)
            self._warn(f"the feature cache {self.path} was damaged ({e}); it was rebuilt")
            self._connect()
        else:
            self._disable(e)

    def _close_quietly(self) -> None:
        if self.conn_ is not None:
            with suppress(sqlite3.Error):
                self.conn_.close()
            self.conn_ = None


class FeatureCache(_Store):
    """An open feature cache for one extractor (see the module docstring for the format).

    Use :meth:`open`; every method swallows SQLite failures after the first one (the cache is then disabled
    for the rest of the scan and ``warn`` is called once), so a broken cache can slow a scan down but never
    fails it or returns wrong vectors.

    Args:
        path: the SQLite file.
        identity: :func:`extractor_identity` of the extractor whose vectors are stored / read.
        dim: vector length.
        warn: receives one-line warnings.
    """

    def __init__(self, path: Path, identity: str, dim: int, warn: WarnFn | None = None) -> None:
        super().__init__(path, warn)
        self.identity = identity
        self.dim = dim
        self.extractor_id_: int | None = None

    @classmethod
    def open(cls, folder: Path, info: dict[str, Any], dim: int, warn: WarnFn | None = None) -> FeatureCache:
        """Open (creating, or rebuilding when corrupt) the cache in ``folder`` for the extractor ``info``.

        Never raises for a damaged file; raises :class:`CacheError` only when the folder cannot be created.
        """
        cache = cls(cls._file(folder), extractor_identity(info), dim, warn)
        cache._connect()
        return cache

    def _ready(self) -> None:
        self.extractor_id_ = self._extractor_id()

    def _extractor_id(self) -> int:
        conn = self._conn()
        with conn:
            query = "SELECT id, dim FROM extractors WHERE identity = ?"
            row = conn.execute(query, (self.identity,)).fetchone()
            if row is not None and row[1] == self.dim:
                return int(row[0])
            if row is not None:  # same identity, other length: cannot happen unless damaged; start over
                conn.execute("DELETE FROM features WHERE extractor = ?", (row[0],))
                conn.execute("DELETE FROM extractors WHERE id = ?", (row[0],))
            cur = conn.execute(
                "INSERT INTO extractors (identity, dim, created) VALUES (?, ?, ?)",
                (self.identity, self.dim, time.time()),
            )
            return int(cur.lastrowid or 0)

    # ------------------------------------------------------------------------------------------ reading

    def lookup(self, files: Sequence[tuple[str, int, int]], *, mirror: bool) -> dict[int, Entry]:
        """Cached entries of ``files`` (``(path, size, mtime_ns)`` each), by position in ``files``.

        A file is returned only when path, size and mtime_ns match, the row verifies and (with ``mirror``)
        holds a mirrored vector.
        """
        found: dict[int, Entry] = {}
        if not self.enabled or not files:
            return found
        position = {path: i for i, (path, _, _) in enumerate(files) if storable(path)}
        try:
            for part in _chunks(list(position), _CHUNK):
                marks = ",".join("?" * len(part))
                query = (
                    "SELECT path, size, mtime_ns, content, width, height, vector, mirrored, checksum "
                    f"FROM features WHERE extractor = ? AND path IN ({marks})"
                )
                for row in self._conn().execute(query, (self.extractor_id_, *part)):
                    i = position[row[0]]
                    _, size, mtime_ns = files[i]
                    if row[1] != size or row[2] != mtime_ns:
                        continue
                    entry = self._entry(row, mirror)
                    if entry is not None:
                        found[i] = entry
        except sqlite3.DatabaseError as e:
            self._fail(e)
            return {}
        return found

    def by_content(self, size: int, content: str, *, mirror: bool) -> Entry | None:
        """A verified entry of any file with these bytes (size and digest), or None."""
        if not self.enabled:
            return None
        try:
            rows = self._conn().execute(
                "SELECT path, size, mtime_ns, content, width, height, vector, mirrored, checksum "
                "FROM features WHERE extractor = ? AND size = ? AND content = ?",
                (self.extractor_id_, size, content),
            )
            for row in rows:
                entry = self._entry(row, mirror)
                if entry is not None:
                    return entry
        except sqlite3.DatabaseError as e:
            self._fail(e)
        return None

    def _entry(self, row: tuple[Any, ...], mirror: bool) -> Entry | None:
        path, size, mtime_ns, content, width, height, vector, mirrored, checksum = row
        if mirror and mirrored is None:
            return None
        nbytes = 4 * self.dim
        if not isinstance(vector, bytes) or len(vector) != nbytes:
            return None
        if mirrored is not None and (not isinstance(mirrored, bytes) or len(mirrored) != nbytes):
            return None
        if checksum != _checksum(path, size, mtime_ns, content, width, height, vector, mirrored):
            return None
        v = np.frombuffer(vector, dtype="<f4").astype(np.float32)
        m = np.frombuffer(mirrored, dtype="<f4").astype(np.float32) if mirrored is not None else None
        if not np.all(np.isfinite(v)) or (m is not None and not np.all(np.isfinite(m))):
            return None
        return Entry(int(width), int(height), v, m, content)

    # ------------------------------------------------------------------------------------------ writing

    def store(self, rows: Iterable[Row]) -> None:
        """Insert or replace rows in one transaction (all or nothing, also when the process is killed)."""
        if not self.enabled:
            return
        values = []
        for r in rows:
            if not storable(r.path):
                continue
            vector, mirrored = np.ascontiguousarray(r.vector, dtype="<f4").tobytes(), _blob(r.mirrored)
            check = _checksum(r.path, r.size, r.mtime_ns, r.content, r.width, r.height, vector, mirrored)
            values.append(
                (
                    self.extractor_id_,
                    r.path,
                    r.size,
                    r.mtime_ns,
                    r.content,
                    r.width,
                    r.height,
                    vector,
                    mirrored,
                    check,
                )
            )
        if not values:
            return
        try:
            with self._conn() as conn:
                conn.executemany(
                    "INSERT OR REPLACE INTO features (extractor, path, size, mtime_ns, content, width, "
                    "height, vector, mirrored, checksum) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    values,
                )
        except sqlite3.DatabaseError as e:
            self._fail(e)


# ------------------------------------------------------------------------------------ the verify stage


def file_key(path: str, size: int, mtime: float) -> str:
    """Identity of one file's content as the verify stage's cache sees it: path, size and ``st_mtime``."""
    return f"{path}\0{size}\0{mtime!r}"


@dataclass(frozen=True)
class StoredKeypoints:
    """Keypoints of one image as stored: ``points`` float32 (k, 2), ``descriptors`` uint8 (k, 128) (SIFT's
    descriptors are integers 0..255, so nothing is lost), ``size`` (width, height) they were computed at."""

    points: np.ndarray
    descriptors: np.ndarray
    size: tuple[int, int]


def _keypoint_checksum(
    params: str, path: str, size: int, mtime: float, w: int, h: int, pts: bytes, desc: bytes
) -> bytes:
    digest = hashlib.blake2b(digest_size=8)
    digest.update(f"{params}\0{path}\0{size}\0{mtime!r}\0{w}\0{h}\0".encode("utf-8", "surrogatepass"))
    digest.update(pts)
    digest.update(b"\1")
    digest.update(desc)
    return digest.digest()


def _blob_checksum(key: str, blob: bytes) -> bytes:
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8)
    digest.update(blob)
    return digest.digest()


def _decision_checksum(params: str, a: str, b: str, evidence: str) -> bytes:
    text = f"{params}\0{a}\0{b}\0{evidence}"
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()


def _facts_checksum(params: str, path: str, size: int, mtime: float, value: str) -> bytes:
    text = f"{params}\0{path}\0{size}\0{mtime!r}\0{value}"
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()


# Candidate sets kept (one per extractor and set of images): enough for a few collections scanned in turn.
CANDIDATE_SETS_KEPT = 32


class VerifyCache(_Store):
    """Keypoints, pair decisions, candidate pairs and file facts of the grouping stage, in the same file as
    the features.

    Keypoints are keyed by ``params`` (every setting that shapes them, see
    :func:`dedup.verify.keypoint_params`) and the file's path, size and mtime; a pair decision by
    ``params`` (extractors, thresholds, verify settings) and both files' :func:`file_key`. Rows carry
    checksums like feature rows: a garbled row is a miss. Writes are buffered and committed in small
    transactions (:meth:`flush`, also on close), so a scan killed mid-way keeps what it committed and never
    leaves half a row.
    """

    FLUSH_EVERY = 256

    def __init__(self, path: Path, warn: WarnFn | None = None) -> None:
        super().__init__(path, warn)
        self._keypoints: dict[tuple[str, str], tuple[Any, ...]] = {}  # written by the next flush
        self._decisions: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()
        self.read_only = False

    @classmethod
    def open(cls, folder: Path, warn: WarnFn | None = None) -> VerifyCache:
        """Open (creating, or rebuilding when corrupt) the cache in ``folder``; CacheError only when the
        folder cannot be created."""
        cache = cls(cls._file(folder), warn)
        cache._connect()
        return cache

    @classmethod
    def at(cls, path: Path, warn: WarnFn | None = None, *, read_only: bool = False) -> VerifyCache:
        """Open (creating, or rebuilding when corrupt) the store in the file ``path`` (a saved index keeps
        its keypoints in one, see :mod:`dedup.saved_index`); with ``read_only`` nothing is ever put into it
        (keypoints of an uploaded image are not kept)."""
        cache = cls(path, warn)
        cache.read_only = read_only
        cache._connect()
        return cache

    def get_keypoints(self, params: str, path: str, size: int, mtime: float) -> StoredKeypoints | None:
        """The stored keypoints of this exact file under ``params``, or None."""
        if not self.enabled or not storable(path):
            return None
        try:
            with self._lock:
                pending = self._keypoints.get((params, path))
                row = (
                    pending[2:]
                    if pending is not None
                    else self._conn()
                    .execute(
                        "SELECT size, mtime, width, height, points, descriptors, checksum FROM keypoints "
                        "WHERE params = ? AND path = ?",
                        (params, path),
                    )
                    .fetchone()
                )
        except sqlite3.DatabaseError as e:
            self._fail(e)
            return None
        if row is None or row[0] != size or row[1] != mtime:
            return None
        _, _, w, h, pts, desc, checksum = row
        if checksum != _keypoint_checksum(params, path, size, mtime, w, h, pts, desc):
            return None
        if len(pts) % 8 or len(desc) != 16 * len(pts):
            return None
        points = np.frombuffer(pts, dtype="<f4").reshape(-1, 2).astype(np.float32)
        descriptors = np.frombuffer(desc, dtype=np.uint8).reshape(-1, 128).copy()
        return StoredKeypoints(points, descriptors, (int(w), int(h)))

    def put_keypoints(self, params: str, path: str, size: int, mtime: float, kp: StoredKeypoints) -> None:
        """Remember the keypoints of a file (written with the next :meth:`flush`)."""
        if not self.enabled or self.read_only or not storable(path):
            return
        pts = np.ascontiguousarray(kp.points, dtype="<f4").tobytes()
        desc = np.ascontiguousarray(kp.descriptors, dtype=np.uint8).tobytes()
        w, h = kp.size
        row = (
            params,
            path,
            size,
            mtime,
            w,
            h,
            pts,
            desc,
            _keypoint_checksum(params, path, size, mtime, w, h, pts, desc),
        )
        with self._lock:
            self._keypoints[(params, path)] = row
            full = len(self._keypoints) >= self.FLUSH_EVERY
        if full:
            self.flush()

    def get_decisions(self, params: str, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """Stored decisions (evidence as JSON text) of ``pairs`` of :func:`file_key` under ``params``."""
        found: dict[tuple[str, str], str] = {}
        if not self.enabled or not pairs:
            return found
        wanted = set(pairs)
        with self._lock:
            for row in self._decisions:
                if row[0] == params and (row[1], row[2]) in wanted:
                    found[(row[1], row[2])] = row[3]
        by_a: dict[str, list[str]] = {}
        for a, b in wanted:
            by_a.setdefault(a, []).append(b)
        try:
            with self._lock:
                conn = self._conn()
                for part in _chunks(list(by_a), _CHUNK):
                    marks = ",".join("?" * len(part))
                    rows = conn.execute(
                        f"SELECT a, b, evidence, checksum FROM decisions WHERE params = ? AND a IN ({marks})",
                        (params, *part),
                    )
                    for a, b, evidence, checksum in rows:
                        if (a, b) in wanted and checksum == _decision_checksum(params, a, b, evidence):
                            found[(a, b)] = evidence
        except sqlite3.DatabaseError as e:
            self._fail(e)
            return {}
        return found

    def put_decision(self, params: str, a: str, b: str, evidence: str) -> None:
        """Remember one pair's decision (written with the next :meth:`flush`)."""
        if not self.enabled or self.read_only or not (storable(a) and storable(b)):
            return
        with self._lock:
            self._decisions.append((params, a, b, evidence, _decision_checksum(params, a, b, evidence)))
            full = len(self._decisions) >= self.FLUSH_EVERY
        if full:
            self.flush()

    def get_facts(self, params: str, files: Sequence[tuple[str, int, float]]) -> dict[str, str]:
        """Stored :mod:`dedup.facts` (JSON text) under ``params`` of the ``files`` (path, size, mtime) whose
        size and mtime still match, by path."""
        found: dict[str, str] = {}
        wanted = {path: (size, mtime) for path, size, mtime in files if storable(path)}
        if not self.enabled or not wanted:
            return found
        try:
            with self._lock:
                conn = self._conn()
                for part in _chunks(list(wanted), _CHUNK):
                    marks = ",".join("?" * len(part))
                    rows = conn.execute(
                        f"SELECT path, size, mtime, value, checksum FROM facts "
                        f"WHERE params = ? AND path IN ({marks})",
                        (params, *part),
                    )
                    for path, size, mtime, value, checksum in rows:
                        if (size, mtime) == wanted[path] and checksum == _facts_checksum(
                            params, path, size, mtime, value
                        ):
                            found[path] = value
        except sqlite3.DatabaseError as e:
            self._fail(e)
            return {}
        return found

    def put_facts(self, params: str, rows: Iterable[tuple[str, int, float, str]]) -> None:
        """Remember the facts (JSON text) of files given as (path, size, mtime, value), in one transaction."""
        if not self.enabled or self.read_only:
            return
        values = [
            (params, path, size, mtime, value, _facts_checksum(params, path, size, mtime, value))
            for path, size, mtime, value in rows
            if storable(path)
        ]
        if not values:
            return
        try:
            with self._lock, self._conn() as conn:
                conn.executemany(
                    "INSERT OR REPLACE INTO facts (params, path, size, mtime, value, checksum) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    values,
                )
        except sqlite3.DatabaseError as e:
            self._fail(e)

    def get_candidates(self, key: str) -> np.ndarray | None:
        """The candidate pairs stored under ``key`` (int64 array of shape (n_pairs, 2)), or None."""
        if not self.enabled:
            return None
        try:
            with self._lock:
                row = (
                    self._conn()
                    .execute("SELECT pairs, checksum FROM candidates WHERE key = ?", (key,))
                    .fetchone()
                )
        except sqlite3.DatabaseError as e:
            self._fail(e)
            return None
        if row is None or row[1] != _blob_checksum(key, row[0]) or len(row[0]) % 8:
            return None
        return np.frombuffer(row[0], dtype="<i4").reshape(-1, 2).astype(np.int64)

    def put_candidates(self, key: str, pairs: np.ndarray) -> None:
        """Remember the candidate pairs of one extractor's neighbour search (only the latest few are kept)."""
        if not self.enabled or self.read_only:
            return
        blob = np.ascontiguousarray(pairs, dtype="<i4").tobytes()
        try:
            with self._lock, self._conn() as conn:
                conn.execute(
                    "INSERT OR REPLACE INTO candidates (key, pairs, checksum, created) VALUES (?, ?, ?, ?)",
                    (key, blob, _blob_checksum(key, blob), time.time()),
                )
                conn.execute(  # a re-scan needs only the latest searches; older sets of images are stale
                    "DELETE FROM candidates WHERE key NOT IN "
                    "(SELECT key FROM candidates ORDER BY created DESC LIMIT ?)",
                    (CANDIDATE_SETS_KEPT,),
                )
        except sqlite3.DatabaseError as e:
            self._fail(e)

    def flush(self) -> None:
        """Commit what was put since the last flush, in one transaction."""
        with self._lock:
            keypoints, self._keypoints = list(self._keypoints.values()), {}
            decisions, self._decisions = self._decisions, []
            if not self.enabled or not (keypoints or decisions):
                return
            try:
                with self._conn() as conn:
                    conn.executemany(
                        "INSERT OR REPLACE INTO keypoints (params, path, size, mtime, width, height, points, "
                        "descriptors, checksum) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        keypoints,
                    )
                    conn.executemany(
                        "INSERT OR REPLACE INTO decisions (params, a, b, evidence, checksum) "
                        "VALUES (?, ?, ?, ?, ?)",
                        decisions,
                    )
            except sqlite3.DatabaseError as e:
                self._fail(e)

    def close(self) -> None:
        """Flush, then close the connection (idempotent)."""
        self.flush()
        super().close()


@contextmanager
def opened_verify(cfg: CacheConfig, warn: WarnFn | None = None) -> Iterator[VerifyCache | None]:
    """The verify stage's cache of ``cfg``, or None when the cache is disabled or cannot be created."""
    with _opened_store(cfg, warn, lambda folder: VerifyCache.open(folder, warn)) as cache:
        yield cache


def _repair_leftovers(path: Path) -> None:
    """Give a ``-wal`` / ``-shm`` file left by a read-only connection the database's permissions.

    SQLite creates them with the database file's mode; a run while the database was read-only leaves them
    read-only, and every later connection then fails ("attempt to write a readonly database") although the
    database itself is writable again. Only files of this user are changed, never removed (another process
    may be using them).
    """
    try:
        db = path.stat()
    except OSError:
        return
    if not os.access(path, os.W_OK):
        return
    for suffix in ("-wal", "-shm"):
        side = Path(f"{path}{suffix}")
        with suppress(OSError):
            st = side.stat()
            if st.st_uid == os.geteuid() and (st.st_mode & 0o777) != (db.st_mode & 0o777):
                os.chmod(side, db.st_mode & 0o777)


def _connect(path: Path) -> sqlite3.Connection:
    """Open ``path``, check that it is a dedup cache of this schema, create the tables if new."""
    _repair_leftovers(path)
    # check_same_thread=False: the verify stage's worker threads share one connection, serialised by a lock
    conn = sqlite3.connect(
        str(path), timeout=_BUSY_TIMEOUT_S, isolation_level="DEFERRED", check_same_thread=False
    )
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if version not in (0, 1, 2, 3, SCHEMA_VERSION) or (version == 0 and tables):
            raise sqlite3.DatabaseError(f"not a dedup feature cache of schema {SCHEMA_VERSION}")
        if version != SCHEMA_VERSION:  # a new file, or an older version: add the tables it lacks
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.commit()
    except BaseException:
        conn.close()
        raise
    return conn


def _is_corruption(e: sqlite3.DatabaseError) -> bool:
    """A damaged or foreign file (rebuild it), as opposed to a locked or read-only one (leave it)."""
    if isinstance(e, sqlite3.OperationalError):
        text = str(e).lower()
        return "malformed" in text or "not a database" in text or "no such table" in text
    return not isinstance(e, (sqlite3.ProgrammingError, sqlite3.InterfaceError))  # those are dedup's bugs


def _move_aside(path: Path) -> None:
    """Rename a damaged cache (and its WAL/SHM files) to ``*.corrupt`` so the next open starts afresh."""
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{path}{suffix}")
        try:
            if src.exists():
                os.replace(src, Path(f"{path}.corrupt{suffix}"))
        except OSError:
            with suppress(OSError):
                src.unlink()


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ------------------------------------------------------------------------------------ info / clear


def info(folder: Path) -> dict[str, Any]:
    """What the cache in ``folder`` holds.

    Returns:
        ``{"dir", "file", "exists", "bytes", "entries", "extractors": [{"identity", "entries"}], "error"}``
        (``error`` is None unless the file cannot be read).
    """
    path = folder / FILENAME
    files = [Path(f"{path}{s}") for s in ("", "-wal", "-shm")]
    out: dict[str, Any] = {
        "dir": str(folder),
        "file": str(path),
        "exists": path.exists(),
        "bytes": sum(f.stat().st_size for f in files if f.exists()),
        "entries": 0,
        "extractors": [],
        "error": None,
    }
    if not path.exists():
        return out
    # Read-write when allowed (without creating anything): the last connection to close then removes the
    # -wal/-shm files; a read-only connection would leave them behind.
    mode = "rw" if os.access(path, os.W_OK) and os.access(folder, os.W_OK) else "ro"
    try:
        conn = sqlite3.connect(f"file:{path}?mode={mode}", uri=True, timeout=_BUSY_TIMEOUT_S)
        try:
            rows = conn.execute(
                "SELECT e.identity, COUNT(f.path) FROM extractors e LEFT JOIN features f "
                "ON f.extractor = e.id GROUP BY e.id ORDER BY e.id"
            ).fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        out["error"] = str(e)
        return out
    out["extractors"] = [{"identity": json.loads(ident), "entries": int(n)} for ident, n in rows]
    out["entries"] = sum(int(n) for _, n in rows)
    return out


def clear(folder: Path) -> int:
    """Delete the cache file(s) in ``folder`` (also a damaged one moved aside) and the stored threshold
    calibrations (``calibration/*.json``, :mod:`dedup.calibrate`). Returns bytes freed.

    Raises:
        CacheError: a file exists but cannot be removed.
    """
    freed = 0
    base = folder / FILENAME
    for name in (base, Path(f"{base}.corrupt")):
        for suffix in ("", "-wal", "-shm"):
            f = Path(f"{name}{suffix}")
            if f.exists():
                size = f.stat().st_size
                try:
                    f.unlink()
                except OSError as e:
                    raise CacheError(f"cannot remove {f}: {e.strerror or e}") from e
                freed += size
    for f in sorted((folder / "calibration").glob("*.json")):
        size = f.stat().st_size
        try:
            f.unlink()
        except OSError as e:
            raise CacheError(f"cannot remove {f}: {e.strerror or e}") from e
        freed += size
    return freed


@contextmanager
def opened(
    cfg: CacheConfig, info: dict[str, Any], dim: int, warn: WarnFn | None = None
) -> Iterator[FeatureCache | None]:
    """The cache of ``cfg`` for the extractor ``info``, or None when disabled; closed on exit.

    A cache folder that cannot be created is reported through ``warn`` and the scan goes on without it.
    """
    with _opened_store(cfg, warn, lambda folder: FeatureCache.open(folder, info, dim, warn)) as cache:
        yield cache


@contextmanager
def _opened_store(
    cfg: CacheConfig, warn: WarnFn | None, open_in: Callable[[Path], _S]
) -> Iterator[_S | None]:
    """``open_in(cache folder)``, or None when the cache is disabled or its folder cannot be created
    (reported through ``warn``); closed on exit."""
    if not cfg.enabled:
        yield None
        return
    try:
        cache = open_in(cache_dir(cfg))
    except CacheError as e:
        if warn is not None:
            warn(f"{e}; scanning without the feature cache")
        yield None
        return
    try:
        yield cache
    finally:
        cache.close()

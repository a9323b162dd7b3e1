"""A saved index: what a scan knows about a collection, kept in a folder, so that new images get their answer
-- duplicate of which kept image, nearest named cluster, how far, novel or not -- without scanning everything
again (``dedup index build|update``, ``dedup assign``, ``dedup serve``).

Folder format (``dedup-index``, version 1; every file but the keypoint store is listed in the manifest with
its size and blake2b digest, checked when the index is loaded)::

    INDEX_DIR/
      dedup-index.json          the manifest: format, version, tool, created/updated, generation, scanned
                                paths, the effective configuration, each extractor's name, identity (as the
                                feature cache has it), dimension, views and files, forest_rows, verified,
                                clustering (method, params), the other files with size and digest
      images.G.jsonl            one line per image (row i = row i of every vectors file): path, bytes, mtime,
                                width, height, blake2b (content digest), group, cluster, distance_to_centre
      vectors-NAME.G.npy        float32 (n_images, dim * views): each extractor's vectors, every view side
                                by side in the order of the manifest's "views" (as the feature cache stores
                                them)
      annoy-NAME.G.ann          the Annoy forest (angular, config's n_trees and seed) over the identity
                                vectors of the first forest_rows images; only above 20,000 images
                                (dedup.index.EXACT_MAX): below, neighbours are found exactly, as a scan does
      groups.G.json             duplicate groups: [{"id", "keep": row, "members": [rows]}]
      clusters.G.json           [{"id", "name", "named", "size", "radius"}] (empty without a clustering)
      centres.G.npy             float32 (n_clusters, dim): the L2-normalised mean of each cluster's first
                                extractor vectors
      keypoints.sqlite3         SIFT keypoints of the images (when the verify stage runs), in the feature
                                cache's keypoint table format (rows carry checksums)

``G`` is the generation: an update writes the next generation's files, then replaces the manifest
atomically, then removes the old generation, so a run killed at any point leaves a loadable index.

**Novel**: an image is ``novel`` when its cosine distance to the nearest cluster centre is larger than that
cluster's ``radius``, the :data:`NOVEL_QUANTILE` (95 %) quantile of its own members' distances to the centre
(so about one member in twenty lies further out), and larger than ``1 - threshold`` of the first extractor
(0.30 for phash: a tight cluster of near-copies does not make its next copy novel) -- or than a fixed
``novel_distance`` when one is given.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from dedup import __version__
from dedup.across import reference_folders, scan_roots
from dedup.actions import load_names
from dedup.cache import VerifyCache, content_digest, extractor_identity
from dedup.config import Config, load_config
from dedup.embeddings import Embeddings, to_distance
from dedup.errors import ConfigError, InputError
from dedup.extract import FeatureSet, cache_identity, collect_features
from dedup.facts import read_all as read_facts
from dedup.features import Extractor, make_extractors
from dedup.ignore import scan_rules
from dedup.images import ImageRecord, Skipped, discover
from dedup.index import EXACT_MAX, build_index, load_index, nearest
from dedup.keep import choose_keep
from dedup.pipeline import cluster_collection, duplicates_of
from dedup.report.files import fsync_folder
from dedup.report.schema import cluster_folder
from dedup.verify import (
    KeypointStore,
    PairEvidence,
    Thresholds,
    Verifier,
    thresholds_for,
    verification_enabled,
)

ProgressFn = Callable[[str, int, "int | None"], None]
WarnFn = Callable[[str], None]

FORMAT = "dedup-index"
VERSION = 1
MANIFEST = "dedup-index.json"
KEYPOINTS = "keypoints.sqlite3"
#: A cluster's radius: this quantile of its members' distances to its centre (see the module docstring).
NOVEL_QUANTILE = 0.95


@dataclass(frozen=True)
class IndexedImage:
    """One image of a saved index (row ``i`` of its vectors).

    Attributes:
        path, size, mtime, width, height: as the scan saw the file.
        digest: blake2b of its bytes (an upload with the same bytes is this image), or None if unreadable.
        group: id of its duplicate group, or None.
        cluster: id of its cluster, or None without a clustering.
        distance: cosine distance to its cluster's centre, or None.
    """

    path: str
    size: int
    mtime: float
    width: int
    height: int
    digest: str | None = None
    group: int | None = None
    cluster: int | None = None
    distance: float | None = None

    def record(self) -> ImageRecord:
        return ImageRecord(self.path, self.size, self.mtime, self.width, self.height)


@dataclass(frozen=True)
class IndexGroup:
    """A duplicate group of the index: its id, the kept image's row and every member's row (keep first)."""

    id: int
    keep: int
    members: tuple[int, ...]


@dataclass(frozen=True)
class IndexCluster:
    """A cluster of the index: id (from 1), name (``cluster-0001`` unless named in names.yaml), size and
    radius (see :data:`NOVEL_QUANTILE`)."""

    id: int
    name: str
    named: bool
    size: int
    radius: float


@dataclass(frozen=True)
class Duplicate:
    """The kept image a new image duplicates, and the evidence (the verifier's decision for the pair).

    Attributes:
        path: the kept image of the group (or the ungrouped indexed image) it duplicates.
        group: that group's id, or None when the image was in no group.
        evidence: ``similar`` (a sure threshold, or the plain one without verification) or ``verified``.
        similarity: the first extractor's cosine similarity (best over mirror/rotated views).
        similarities: every extractor's.
        inliers, coverage, rotation: the keypoint check (None when not verified).
        mirrored: matched as a mirror image.
    """

    path: str
    group: int | None
    evidence: str
    similarity: float
    similarities: dict[str, float]
    inliers: int | None
    coverage: float | None
    mirrored: bool
    rotation: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Assignment:
    """The answer for one new image.

    Attributes:
        path: the image.
        duplicate_of: the kept image it duplicates (decided as a scan decides), or None.
        known: the indexed image with exactly these bytes, or None.
        cluster: nearest cluster's id (None without a clustering); ``cluster_name`` its name.
        distance: cosine distance to that cluster's centre.
        novel: farther from the nearest centre than the novel threshold (None without a clustering).
        embedding: with ``embedding=True``, each extractor's vector (the image itself, L2-normalised).
    """

    path: str
    duplicate_of: Duplicate | None
    known: str | None
    cluster: int | None
    cluster_name: str | None
    distance: float | None
    novel: bool | None
    embedding: dict[str, list[float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "path": self.path,
            "duplicate_of": None if self.duplicate_of is None else self.duplicate_of.to_dict(),
            "known": self.known,
            "cluster": self.cluster,
            "cluster_name": self.cluster_name,
            "distance_to_centre": None if self.distance is None else round(self.distance, 6),
            "novel": self.novel,
        }
        if self.embedding is not None:
            d["embedding"] = self.embedding
        return d


@dataclass
class AssignResult:
    """What :meth:`Index.assign` found: one :class:`Assignment` per image that decoded, the skipped files."""

    assignments: list[Assignment]
    skipped: list[Skipped]
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class UpdateResult:
    """What :meth:`Index.update` did.

    Attributes:
        added: new images taken in; ``duplicates`` of them joined a group of the index, ``new_groups``
            groups were formed (among new images, or with an ungrouped indexed image).
        unchanged: files already in the index, as they were.
        changed: files in the index whose size or modification time changed (left as indexed: rebuild to
            take them in again).
        skipped: files that could not be used, with reasons.
        forest_rebuilt: the Annoy forests were rebuilt (more than 20,000 images searched exactly).
    """

    added: int = 0
    duplicates: int = 0
    new_groups: int = 0
    unchanged: int = 0
    changed: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    forest_rebuilt: bool = False
    seconds: dict[str, float] = field(default_factory=dict)


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def _digest_file(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _digests(paths: Sequence[str]) -> list[str | None]:
    """Content digests (as the feature cache computes them) of ``paths``; None for unreadable files."""

    def one(path: str) -> str | None:
        try:
            return content_digest(path)
        except OSError:
            return None

    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        return list(pool.map(one, paths))


def _damaged(folder: Path, what: str) -> InputError:
    return InputError(f"the index {folder} is damaged ({what}); build it again with dedup index build")


class Index:
    """A saved index, loaded (:meth:`load`) or built (:meth:`build`).

    Example::

        from dedup.saved_index import Index
        index = Index.build(["photos/"], "photos.index")          # or Index.load("photos.index")
        for a in index.assign(["new/"]).assignments:
            print(a.path, a.duplicate_of and a.duplicate_of.path, a.cluster_name, a.novel)

    Attributes:
        folder: the index folder.
        config: the configuration it was built with (extractors as they ran).
        images: every indexed image (row ``i`` of the vectors).
        extractors: the extractors (models load only when an image must be embedded).
        embeddings: each extractor's vectors, with their views.
        groups: duplicate groups by id.
        clusters: the clusters, in id order; ``centres`` their centres.
    """

    def __init__(
        self,
        folder: Path,
        manifest: dict[str, Any],
        config: Config,
        images: list[IndexedImage],
        extractors: list[Extractor],
        embeddings: list[Embeddings],
        groups: dict[int, IndexGroup],
        clusters: list[IndexCluster],
        centres: np.ndarray,
        forests: list[Any],
        warn: WarnFn | None = None,
    ) -> None:
        self.folder = folder
        self.manifest = manifest
        self.config = config
        self.images = images
        self.extractors = extractors
        self.embeddings = embeddings
        self.groups = groups
        self.clusters = clusters
        self.centres = centres
        self.forests = forests
        self.warn = warn
        self._rows_by_path = {im.path: i for i, im in enumerate(images)}
        self._rows_by_digest: dict[tuple[int, str], int] = {
            (im.size, im.digest): i for i, im in enumerate(images) if im.digest
        }

    # ---------------------------------------------------------------------------------------- reading

    @property
    def verified(self) -> bool:
        return bool(self.manifest.get("verified"))

    @property
    def forest_rows(self) -> int:
        return int(self.manifest.get("forest_rows", 0))

    @property
    def novel_floor(self) -> float:
        """The least distance that counts as novel: ``1 - threshold`` of the first extractor (an image as
        near a centre as a duplicate would be to a member is never novel, however tight the cluster)."""
        return float(to_distance(thresholds_for(self.extractors[0], self.config).plain))

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.extractors]

    def row_of(self, path: str | os.PathLike[str]) -> int | None:
        """The row of the indexed image ``path`` (made absolute), or None."""
        return self._rows_by_path.get(os.path.abspath(path))

    @classmethod
    def load(cls, folder: str | os.PathLike[str], *, warn: WarnFn | None = None) -> Index:
        """Open the index in ``folder``, checking every file against the manifest.

        Raises:
            InputError: not an index folder, a newer format, a damaged or changed file, or extractors that
                no longer compute the vectors the index holds.
            WeightsError: the model weights the index was built with cannot be obtained.
        """
        path = Path(folder).expanduser().absolute()
        manifest_path = path / MANIFEST
        if not path.is_dir():
            raise InputError(f"index folder {path} does not exist (build one with dedup index build)")
        if not manifest_path.is_file():
            raise InputError(f"{path} is not a dedup index (no {MANIFEST}); build one with dedup index build")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
            raise _damaged(path, f"{MANIFEST} does not read as JSON: {e}") from e
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise InputError(f"{path} is not a dedup index ({MANIFEST} is not a {FORMAT} manifest)")
        version = manifest.get("version")
        if version != VERSION:
            raise InputError(
                f"the index {path} has format version {version!r}; this dedup reads version {VERSION}"
            )
        try:
            return cls._read(path, manifest, warn)
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise _damaged(path, f"{type(e).__name__}: {e}") from e

    @classmethod
    def _read(cls, path: Path, manifest: dict[str, Any], warn: WarnFn | None) -> Index:
        files = manifest["files"]
        for name, meta in files.items():
            p = path / name
            if Path(name).name != name:
                raise _damaged(path, f"the manifest names a file outside the folder: {name!r}")
            if not p.is_file():
                raise _damaged(path, f"{name} is missing")
            if p.stat().st_size != meta["bytes"] or _digest_file(p) != meta["blake2b"]:
                raise _damaged(path, f"{name} was changed since the index was written")
        try:
            config = load_config(overrides=_flat_dict(manifest["config"]))
        except ConfigError as e:
            raise _damaged(path, f"its configuration: {e}") from e
        n = int(manifest["images"])
        images = []
        with open(path / manifest["images_file"], encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                d = json.loads(line)
                images.append(
                    IndexedImage(
                        d["path"],
                        int(d["bytes"]),
                        float(d["mtime"]),
                        int(d["width"]),
                        int(d["height"]),
                        d.get("blake2b"),
                        d.get("group"),
                        d.get("cluster"),
                        d.get("distance_to_centre"),
                    )
                )
        if len(images) != n:
            raise _damaged(path, f"{manifest['images_file']} lists {len(images)} images, not {n}")
        extractors = make_extractors(config.features, warn=warn, lazy=True)
        stored = manifest["extractors"]
        if [e.name for e in extractors] != [s["name"] for s in stored]:
            raise _damaged(path, "its extractors do not match its configuration")
        embeddings, forests = [], []
        for ex, s in zip(extractors, stored, strict=True):
            info, dim = cache_identity(ex, config)
            if extractor_identity(info) != s["identity"] or info["views"] != s["views"]:
                raise InputError(
                    f"the index {path} was built with another {ex.name} extractor (other weights, settings "
                    "or dedup version) than this one computes; build it again"
                )
            vectors = np.load(path / s["vectors"], mmap_mode="r", allow_pickle=False)
            if vectors.shape != (n, dim) or vectors.dtype != np.float32:
                raise _damaged(path, f"{s['vectors']} has shape {vectors.shape}, not {(n, dim)}")
            embeddings.append(_views(vectors, ex.dim, s["views"]))
            forests.append(load_index(path / s["forest"], ex.dim) if s.get("forest") else None)
        groups = {}
        for g in json.loads((path / manifest["groups_file"]).read_text(encoding="utf-8")):
            groups[int(g["id"])] = IndexGroup(
                int(g["id"]), int(g["keep"]), tuple(int(m) for m in g["members"])
            )
            if not all(0 <= m < n for m in groups[int(g["id"])].members):
                raise _damaged(path, f"group {g['id']} names rows beyond the {n} images")
        clusters = [
            IndexCluster(int(c["id"]), str(c["name"]), bool(c["named"]), int(c["size"]), float(c["radius"]))
            for c in json.loads((path / manifest["clusters_file"]).read_text(encoding="utf-8"))
        ]
        centres = np.load(path / manifest["centres_file"], allow_pickle=False)
        if len(centres) != len(clusters):
            raise _damaged(path, f"{len(centres)} cluster centres for {len(clusters)} clusters")
        return cls(
            path, manifest, config, images, extractors, embeddings, groups, clusters, centres, forests, warn
        )

    # ---------------------------------------------------------------------------------------- building

    @classmethod
    def build(
        cls,
        paths: Sequence[str | os.PathLike[str]],
        to: str | os.PathLike[str],
        config: Config | None = None,
        *,
        names: str | os.PathLike[str] | None = None,
        progress: ProgressFn | None = None,
        warn: WarnFn | None = None,
    ) -> Index:
        """Scan ``paths`` (exactly as ``dedup scan`` does), cluster them (``group.method`` agglomerative or
        kmeans; dbscan = no clusters), and save everything into the folder ``to``.

        Args:
            paths: folders and/or images.
            to: the index folder: must not exist, or be empty.
            config: the configuration (defaults when omitted).
            names: a ``names.yaml`` (cluster id -> name, as ``dedup group`` writes it) naming the clusters.

        Raises:
            InputError: a path does not exist; ``to`` is not empty (an index there: use :meth:`update`).
        """
        config = config or Config()
        folder = Path(to).expanduser().absolute()
        _check_empty(folder)
        cluster_names = load_names(names) if names is not None else {}
        roots = scan_roots([Path(p) for p in paths], config)
        feats = collect_features(roots, config, exclude=[folder], progress=progress, warn=warn)
        ran = "+".join(e.name for e in feats.extractors)
        cfg = replace(
            feats.config, features=replace(feats.config.features, extractor=ran, offline_fallback="none")
        )
        result = duplicates_of(feats, cfg, progress=progress, warn=warn)
        if cfg.group.method != "dbscan":
            result = cluster_collection(result, cfg, progress=progress)
        n = len(result.images)
        group_of: dict[int, int] = {}
        groups = {}
        for gid, g in enumerate(result.groups, start=1):
            members = (g.keep, *[m for m in g.members if m != g.keep])
            groups[gid] = IndexGroup(gid, g.keep, members)
            group_of.update(dict.fromkeys(members, gid))
        clusters: list[IndexCluster] = []
        centres = np.zeros((0, feats.extractors[0].dim), dtype=np.float32)
        labels: list[int | None] = [None] * n
        dists: list[float | None] = [None] * n
        if result.clustering is not None:
            c = result.clustering
            k = c.n_clusters
            centres = _centres(result.embeddings.vectors, c.labels, k)
            for label in range(k):
                cid = label + 1
                own = c.distances[c.labels == label]
                named = cid in cluster_names
                name = cluster_names[cid] if named else cluster_folder(cid, k)
                radius = float(np.quantile(own, NOVEL_QUANTILE)) if len(own) else 0.0
                clusters.append(IndexCluster(cid, name, named, int(len(own)), round(radius, 6)))
            labels = [int(x) + 1 for x in c.labels]
            dists = [round(float(x), 6) for x in c.distances]
        digests = _digests([im.path for im in result.images])
        images = [
            IndexedImage(
                im.path,
                im.size,
                im.mtime,
                im.width,
                im.height,
                digests[i],
                group_of.get(i),
                labels[i],
                dists[i],
            )
            for i, im in enumerate(result.images)
        ]
        embeddings = [result.all_embeddings[e.name] for e in feats.extractors]
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "created": _now(),
            "generation": 0,
            "paths": list(result.paths),
            "verified": result.verified,
            "clustering": None
            if result.clustering is None
            else {"method": result.clustering.method, "params": result.clustering.params},
            "forest_rows": 0,
        }
        index = cls(
            folder,
            manifest,
            cfg,
            images,
            list(feats.extractors),
            embeddings,
            groups,
            clusters,
            centres,
            [None] * len(embeddings),
            warn,
        )
        folder.mkdir(parents=True, exist_ok=True)
        if result.verified:
            index._keypoints(range(n), progress)
        index.manifest["build_seconds"] = {k: round(v, 3) for k, v in result.seconds.items()}
        index._save(rebuild_forest=n > EXACT_MAX)
        return index

    def _keypoints(self, rows: Sequence[int] | range, progress: ProgressFn | None) -> None:
        """Compute (or find) the keypoints of ``rows`` into the index's keypoint store."""
        rows = list(rows)
        if not rows:
            return
        store_file = VerifyCache.at(self.folder / KEYPOINTS, self.warn)
        try:
            records = [self.images[i].record() for i in rows]
            store = KeypointStore(records, self.config, cache=store_file)
            step = 256
            for start in range(0, len(rows), step):
                if progress:
                    progress("keypoints", start, len(rows))
                store.prefetch(range(start, min(start + step, len(rows))))
            if progress:
                progress("keypoints", len(rows), len(rows))
        finally:
            store_file.close()

    def _save(self, *, rebuild_forest: bool) -> None:
        """Write the next generation's files, then the manifest (atomically), then drop the old files."""
        folder = self.folder
        old = set(self.manifest.get("files", {}))
        g = int(self.manifest.get("generation", 0)) + 1
        written: dict[str, str] = {}

        def put(name: str, write: Callable[[Path], None] | None) -> str:
            if write is not None:
                write(folder / name)
            written[name] = name
            return name

        def text(content: str) -> Callable[[Path], None]:
            def w(p: Path) -> None:
                with open(p, "w", encoding="utf-8", errors="surrogateescape") as f:
                    f.write(content)
                    f.flush()
                    os.fsync(f.fileno())

            return w

        def array(a: np.ndarray) -> Callable[[Path], None]:
            def w(p: Path) -> None:
                with open(p, "wb") as f:
                    np.save(f, np.ascontiguousarray(a, dtype=np.float32), allow_pickle=False)
                    f.flush()
                    os.fsync(f.fileno())

            return w

        lines = "".join(
            json.dumps(
                {
                    "path": im.path,
                    "bytes": im.size,
                    "mtime": im.mtime,
                    "width": im.width,
                    "height": im.height,
                    "blake2b": im.digest,
                    "group": im.group,
                    "cluster": im.cluster,
                    "distance_to_centre": im.distance,
                },
                ensure_ascii=False,
            )
            + "\n"
            for im in self.images
        )
        images_file = put(f"images.{g}.jsonl", text(lines))
        groups_file = put(
            f"groups.{g}.json",
            text(
                json.dumps(
                    [{"id": x.id, "keep": x.keep, "members": list(x.members)} for x in self.groups.values()]
                )
            ),
        )
        clusters_file = put(
            f"clusters.{g}.json", text(json.dumps([asdict(c) for c in self.clusters], ensure_ascii=False))
        )
        centres_file = put(f"centres.{g}.npy", array(self.centres))
        forest_rows = len(self.images) if rebuild_forest else self.forest_rows
        stored = []
        previous = {s["name"]: s for s in self.manifest.get("extractors", [])}
        for e, (ex, emb) in enumerate(zip(self.extractors, self.embeddings, strict=True)):
            info, _ = cache_identity(ex, self.config)
            vectors = put(f"vectors-{ex.name}.{g}.npy", array(_stack(emb)))
            forest = previous.get(ex.name, {}).get("forest")
            if rebuild_forest:
                name = f"annoy-{ex.name}.{g}.ann"
                built = build_index(
                    emb.vectors, n_trees=self.config.index.n_trees, seed=self.config.index.seed
                )
                built.save(str(folder / name))
                self.forests[e] = load_index(folder / name, ex.dim)
                forest = put(name, None)
            elif forest:
                written[forest] = forest
            stored.append(
                {
                    "name": ex.name,
                    "identity": extractor_identity(info),
                    "dim": ex.dim,
                    "views": info["views"],
                    "vectors": vectors,
                    "forest": forest,
                }
            )
        manifest = {
            **self.manifest,
            "tool": f"dedup {__version__}",
            "updated": _now(),
            "generation": g,
            "images": len(self.images),
            "groups": len(self.groups),
            "clusters": len(self.clusters),
            "config": self.config.to_dict(),
            "extractors": stored,
            "forest_rows": forest_rows,
            "images_file": images_file,
            "groups_file": groups_file,
            "clusters_file": clusters_file,
            "centres_file": centres_file,
            "keypoints": KEYPOINTS if self.verified else None,
        }
        manifest["files"] = {
            name: {"bytes": (folder / name).stat().st_size, "blake2b": _digest_file(folder / name)}
            for name in written
        }
        tmp = folder / f".{MANIFEST}.tmp"
        text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")(tmp)
        os.replace(tmp, folder / MANIFEST)
        fsync_folder(folder)
        self.manifest = manifest
        for name in old - set(written):
            with suppress(OSError):
                (folder / name).unlink()

    # ---------------------------------------------------------------------------------------- updating

    def update(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        progress: ProgressFn | None = None,
        warn: WarnFn | None = None,
    ) -> UpdateResult:
        """Take in the images under ``paths`` that the index does not hold yet.

        Only the new images are decoded, embedded and given keypoints; each is assigned like
        :meth:`assign` (a duplicate of an indexed image joins its group -- the kept image of a group never
        changes; with an ungrouped indexed image it forms a new group whose kept image the keep policy
        chooses), the others are grouped among themselves exactly as a scan of them would group them, and
        every new image goes into its nearest cluster (centres and radii stay as built). The index files
        are then rewritten (I/O in proportion to the index; no old image is decoded or compared again), and
        the Annoy forests rebuilt only once more than 20,000 images lie beyond them.

        Raises:
            InputError: a path does not exist.
        """
        warn = warn or self.warn
        t0 = time.perf_counter()
        out = UpdateResult()
        files, skipped = discover([Path(p) for p in paths], self.config.discover, exclude=[self.folder])
        out.skipped = list(skipped)
        new = []
        for f in files:
            row = self._rows_by_path.get(f.path)
            if row is None:
                new.append(f.path)
            elif (self.images[row].size, self.images[row].mtime) == (f.size, f.mtime):
                out.unchanged += 1
            else:
                out.changed.append(f.path)
        if not new:
            out.seconds["update"] = time.perf_counter() - t0
            return out
        feats = collect_features(new, self.config, extractors=self.extractors, progress=progress, warn=warn)
        out.skipped += feats.skipped
        answers = self._answer(feats, progress=progress, warn=warn, store_keypoints=True)
        n0 = len(self.images)
        new_images = [
            IndexedImage(
                im.path, im.size, im.mtime, im.width, im.height, a.known_digest, None, a.cluster, a.distance
            )
            for im, a in zip(feats.images, answers, strict=True)
        ]
        next_id = max(self.groups, default=0) + 1
        alone = []
        for q, a in enumerate(answers):
            row = n0 + q
            target = a.target
            if target is None:
                alone.append(q)
                continue
            out.duplicates += 1
            gid = self.images[target].group
            if gid is not None:
                g = self.groups[gid]
                self.groups[gid] = replace(g, members=(*g.members, row))
                new_images[q] = replace(new_images[q], group=gid)
                continue
            pair = [self.images[target].record(), feats.images[q]]
            facts = read_facts([p.path for p in pair], max_pixels=self.config.decode.max_pixels)
            with_facts = [replace(p, **asdict(f)) for p, f in zip(pair, facts, strict=True)]
            keep = choose_keep(with_facts, self.config.keep.policy, reference_folders(self.config))
            keep_row = (target, row)[keep]
            self.groups[next_id] = IndexGroup(next_id, keep_row, (keep_row, (row, target)[keep]))
            self.images[target] = replace(self.images[target], group=next_id)
            new_images[q] = replace(new_images[q], group=next_id)
            next_id += 1
            out.new_groups += 1
        if len(alone) > 1:
            among = duplicates_of(feats.subset(alone), self.config, progress=progress, warn=warn)
            for found_group in among.groups:
                members = [found_group.keep, *[m for m in found_group.members if m != found_group.keep]]
                rows = [n0 + alone[m] for m in members]
                self.groups[next_id] = IndexGroup(next_id, rows[0], tuple(rows))
                for m in members:
                    new_images[alone[m]] = replace(new_images[alone[m]], group=next_id)
                next_id += 1
                out.new_groups += 1
        sizes: dict[int, int] = {}
        for im in new_images:
            if im.cluster is not None:
                sizes[im.cluster] = sizes.get(im.cluster, 0) + 1
        self.clusters = [replace(c, size=c.size + sizes.get(c.id, 0)) for c in self.clusters]
        self.images += new_images
        self.embeddings = [
            base.concat(add) for base, add in zip(self.embeddings, feats.all_embeddings, strict=True)
        ]
        self._rows_by_path = {im.path: i for i, im in enumerate(self.images)}
        self._rows_by_digest = {(im.size, im.digest): i for i, im in enumerate(self.images) if im.digest}
        if self.verified:
            self._keypoints(range(n0, len(self.images)), progress)
        out.added = len(new_images)
        out.forest_rebuilt = len(self.images) > EXACT_MAX and len(self.images) - self.forest_rows > EXACT_MAX
        self._save(rebuild_forest=out.forest_rebuilt)
        out.seconds["update"] = time.perf_counter() - t0
        return out

    # ---------------------------------------------------------------------------------------- answering

    def assign(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        embedding: bool = False,
        novel_distance: float | None = None,
        cache: bool = True,
        progress: ProgressFn | None = None,
        warn: WarnFn | None = None,
    ) -> AssignResult:
        """The answer for every image under ``paths`` (images or folders); nothing is written.

        Each image is embedded by the index's extractors (through the feature cache unless ``cache`` is
        false) and decoded with the scan's protections; files that cannot be used are skipped with their
        reason. ``duplicate_of`` is decided as a scan decides (see :meth:`_answer`); the nearest cluster is
        the one whose centre is most similar to the image's first-extractor vector, and ``novel`` compares
        the distance with the cluster's radius (see the module docstring) or ``novel_distance``.
        """
        warn = warn or self.warn
        t0 = time.perf_counter()
        cfg = self.config if cache else replace(self.config, cache=replace(self.config.cache, enabled=False))
        feats = collect_features(
            [Path(p) for p in paths], cfg, extractors=self.extractors, progress=progress, warn=warn
        )
        answers = self._answer(feats, progress=progress, warn=warn, novel_distance=novel_distance)
        out = []
        for q, (im, a) in enumerate(zip(feats.images, answers, strict=True)):
            vectors = (
                {
                    ex.name: [round(float(x), 7) for x in emb.vectors[q]]
                    for ex, emb in zip(self.extractors, feats.all_embeddings, strict=True)
                }
                if embedding
                else None
            )
            out.append(replace(a.assignment, path=im.path, embedding=vectors))
        return AssignResult(out, feats.skipped, {"assign": time.perf_counter() - t0})

    def _answer(
        self,
        feats: FeatureSet,
        *,
        progress: ProgressFn | None = None,
        warn: WarnFn | None = None,
        novel_distance: float | None = None,
        store_keypoints: bool = False,
    ) -> list[_Answer]:
        """Decide each new image of ``feats`` against the index, exactly as a scan of the index's images plus
        this one decides it.

        1. Candidates: each extractor's ``index.neighbours`` nearest indexed images within its candidate
           threshold (its plain threshold without verification), as the scan's neighbour graph finds them
           (:func:`dedup.index.nearest`).
        2. Each candidate stands for its group's kept image (an ungrouped candidate for itself). The new
           image belongs to a group when the pair with the kept image is an edge -- the chaining guard's rule
           -- and it is linked to the group through an edge with some candidate of it (DBSCAN's); to an
           ungrouped image when their pair is an edge. Pairs are decided by the pipeline's
           :class:`~dedup.verify.Verifier` (sure thresholds, then SIFT keypoints and RANSAC) with the index's
           thresholds and keypoints, honouring the ignore list. Unlike a scan, no per-image budget limits
           the checks (one image has at most ``neighbours`` candidates per extractor).
        3. The kept images are tried most similar first; the first that takes the image is its answer.
        """
        cfg = self.config
        verify = verification_enabled(cfg, self.extractors)
        thresholds = [thresholds_for(e, cfg) for e in self.extractors]
        q_embs = feats.all_embeddings
        neighbours = [
            nearest(
                base,
                q,
                k=cfg.index.neighbours,
                eps=float(to_distance(th.candidate if verify else th.plain)),
                forest=forest,
                forest_rows=self.forest_rows,
                search_k=cfg.index.search_k,
            )
            for base, q, th, forest in zip(self.embeddings, q_embs, thresholds, self.forests, strict=True)
        ]
        digests = _digests([im.path for im in feats.images])
        store_file = (
            VerifyCache.at(self.folder / KEYPOINTS, warn, read_only=not store_keypoints) if verify else None
        )
        answers = []
        try:
            for q, image in enumerate(feats.images):
                if progress:
                    progress("verify", q, len(feats.images))
                found: dict[int, float] = {}
                for per_extractor in neighbours:
                    rows, dists = per_extractor[q]
                    for r, d in zip(rows.tolist(), dists.tolist(), strict=True):
                        found[r] = min(found.get(r, 2.0), d)
                target, evidence = self._decide(q, image, found, q_embs, thresholds, verify, store_file, warn)
                digest = digests[q]
                known_row = self._rows_by_digest.get((image.size, digest)) if digest else None
                cluster, name, distance, novel = self._cluster(
                    q_embs[0].vectors[q], known_row, novel_distance
                )
                duplicate = None
                if target is not None and evidence is not None:
                    first = self.names[0]
                    t = self.images[target]
                    group = t.group
                    duplicate = Duplicate(
                        path=t.path,
                        group=group,
                        evidence=evidence.reason,
                        similarity=round(float(evidence.similarities.get(first, 1.0)), 6),
                        similarities=dict(evidence.similarities),
                        inliers=evidence.inliers,
                        coverage=evidence.coverage,
                        mirrored=evidence.mirrored,
                        rotation=evidence.rotation,
                    )
                known = None if known_row is None else self.images[known_row].path
                assignment = Assignment(image.path, duplicate, known, cluster, name, distance, novel)
                answers.append(_Answer(assignment, target, digests[q]))
        finally:
            if store_file is not None:
                store_file.close()
        if progress:
            progress("verify", len(feats.images), len(feats.images))
        return answers

    def _decide(
        self,
        q: int,
        image: ImageRecord,
        found: dict[int, float],
        q_embs: Sequence[Embeddings],
        thresholds: list[Thresholds],
        verify: bool,
        store_file: VerifyCache | None,
        warn: WarnFn | None,
    ) -> tuple[int | None, PairEvidence | None]:
        """The indexed image (kept image of a group, or an ungrouped one) the new image ``q`` duplicates."""
        if not found:
            return None, None
        targets: dict[int, float] = {}  # target row -> best distance of a candidate standing for it
        for r, d in found.items():
            gid = self.images[r].group
            t = self.groups[gid].keep if gid is not None else r
            targets[t] = min(targets.get(t, 2.0), d)
        rows = sorted(set(found) | set(targets))
        local = {r: i for i, r in enumerate(rows)}
        ql = len(rows)
        records = [self.images[r].record() for r in rows] + [image]
        verifier = Verifier(
            names=self.names,
            embeddings=[
                base.take(rows).concat(qe.take([q])) for base, qe in zip(self.embeddings, q_embs, strict=True)
            ],
            thresholds=thresholds,
            verify=verify,
            store=KeypointStore(records, self.config, cache=store_file) if verify else None,
            config=self.config.verify,
            blocked=scan_rules(records, self.config, warn),
        )

        def edge(r: int) -> PairEvidence:
            return verifier.evaluate(np.array([[local[r], ql]]))[0]

        order = sorted(targets, key=lambda t: (targets[t], self.images[t].path))
        for t in order:
            ev = edge(t)
            if not ev.edge:
                continue
            gid = self.images[t].group
            if gid is None or t in found:
                return t, ev
            members = sorted(
                (m for m in self.groups[gid].members if m in found),
                key=lambda m: (found[m], self.images[m].path),
            )
            if any(edge(m).edge for m in members):
                return t, ev
        return None, None

    def _cluster(
        self, vector: np.ndarray, known_row: int | None, novel_distance: float | None
    ) -> tuple[int | None, str | None, float | None, bool | None]:
        """Nearest cluster (id, name), the distance to its centre, and whether that is novel."""
        if not self.clusters:
            return None, None, None, None
        if known_row is not None and self.images[known_row].cluster is not None:
            im = self.images[known_row]
            c = self.clusters[int(im.cluster or 1) - 1]
            return c.id, c.name, im.distance, False
        sims = self.centres @ np.asarray(vector, dtype=np.float32)
        best = int(np.argmax(sims))
        c = self.clusters[best]
        distance = round(max(0.0, float(to_distance(float(sims[best])))), 6)
        limit = max(c.radius, self.novel_floor) if novel_distance is None else novel_distance
        return c.id, c.name, distance, bool(distance > limit + 1e-9)

    def similar(self, path: str, k: int = 10) -> list[dict[str, Any]]:
        """The ``k`` indexed images most similar to the indexed image ``path`` (first extractor, best over
        its views), most similar first.

        Raises:
            InputError: ``path`` is not in the index; ``k`` < 1.
        """
        if k < 1:
            raise InputError(f"k must be at least 1, not {k}")
        row = self.row_of(path)
        if row is None:
            raise InputError(f"{path} is not in the index")
        base = self.embeddings[0]
        found = nearest(
            base,
            base.take([row]),
            k=k + 1,
            eps=2.0,
            forest=self.forests[0],
            forest_rows=self.forest_rows,
            search_k=self.config.index.search_k,
        )[0]
        out = []
        for r, d in zip(*found, strict=True):
            if int(r) == row:
                continue
            im = self.images[int(r)]
            out.append(
                {
                    "path": im.path,
                    "similarity": round(1.0 - float(d), 6),
                    "group": im.group,
                    "cluster": im.cluster,
                }
            )
        return out[:k]

    def info(self) -> dict[str, Any]:
        """What the index holds (for ``GET /health`` and ``dedup index info``)."""
        m = self.manifest
        return {
            "folder": str(self.folder),
            "format": m.get("format"),
            "version": m.get("version"),
            "tool": m.get("tool"),
            "created": m.get("created"),
            "updated": m.get("updated"),
            "images": len(self.images),
            "groups": len(self.groups),
            "clusters": len(self.clusters),
            "extractors": self.names,
            "verified": self.verified,
            "paths": m.get("paths", []),
        }


@dataclass(frozen=True)
class _Answer:
    assignment: Assignment
    target: int | None
    known_digest: str | None

    @property
    def cluster(self) -> int | None:
        return self.assignment.cluster

    @property
    def distance(self) -> float | None:
        return self.assignment.distance


def _views(stack: np.ndarray, dim: int, names: Sequence[str]) -> Embeddings:
    """Split a stored vectors array (every view side by side) into :class:`Embeddings`."""
    views = {name: stack[:, dim * v : dim * (v + 1)] for v, name in enumerate(names)}
    return Embeddings(views.pop("identity"), views.pop("hflip", None), tuple(views.items()))


def _stack(emb: Embeddings) -> np.ndarray:
    """The inverse of :func:`_views`: identity, mirror, then the other views, side by side."""
    parts = [emb.vectors] + ([emb.mirrored] if emb.mirrored is not None else []) + [v for _, v in emb.views]
    return np.concatenate([np.asarray(p, dtype=np.float32) for p in parts], axis=1)


def _centres(vectors: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """The L2-normalised mean of each cluster's vectors (as :func:`dedup.partition.centre_distances`)."""
    sums = np.zeros((k, vectors.shape[1]))
    np.add.at(sums, labels, np.asarray(vectors, dtype=np.float64))
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return np.divide(sums, norms, out=np.zeros_like(sums), where=norms > 0).astype(np.float32)


def _flat_dict(config: dict[str, Any]) -> dict[str, Any]:
    return {f"{s}.{k}": v for s, section in config.items() for k, v in section.items()}


def _check_empty(folder: Path) -> None:
    if (folder / MANIFEST).exists():
        raise InputError(
            f"{folder} already holds an index; add images with dedup index update {folder} PATH..."
        )
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder} exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()):
        raise InputError(f"{folder} is not empty; give a new or empty folder for the index")


__all__ = ["AssignResult", "Assignment", "Duplicate", "Index", "IndexedImage", "UpdateResult"]

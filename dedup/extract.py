"""Features of every image under some paths -> :class:`FeatureSet`: cache hits, the identical-file pre-pass,
threaded decoding overlapped with the models, and the views each extractor embeds (mirror image, rotations).

Nothing here prints; progress and warnings go to optional callbacks.
"""

from __future__ import annotations

import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dedup.cache import Entry, FeatureCache, Row, content_digest
from dedup.cache import opened as opened_cache
from dedup.config import AUTO, Config
from dedup.embeddings import Embeddings
from dedup.errors import ImageError
from dedup.features import Extractor, ensure_loaded, make_extractors, uses_mirror
from dedup.images import ImageFile, ImageRecord, Skipped, discover, open_image, stat_root
from dedup.verify import verification_enabled

ProgressFn = Callable[[str, int, "int | None"], None]
WarnFn = Callable[[str], None]

_Loaded = tuple[ImageRecord, list[np.ndarray]] | Skipped

# Views of the prepared (square) arrays embedded besides the image itself when features.rotations is on:
# name -> (quarter turns counter-clockwise, mirrored first). "vflip" is the mirror image turned by 180.
ROTATED_VIEWS = (("rot90", 1, False), ("rot180", 2, False), ("rot270", 3, False))
MIRRORED_ROTATED_VIEWS = (("hflip+rot90", 1, True), ("vflip", 2, True), ("hflip+rot270", 3, True))


def rotations_wanted(config: Config, extractors: Sequence[Extractor]) -> bool:
    """``features.rotations: auto`` resolved: rotated views are embedded when the verify stage checks the
    candidates (SIFT is rotation-invariant, so rotated views can only propose pairs) and no extractor of the
    combination is orientation-invariant already (``color`` proposes rotated copies by itself, so with the
    default phash+thumb+color the rotated views found no more duplicates on any benchmark set and cost a
    quarter of a scan's extraction, neighbour search and similarity time)."""
    return verification_enabled(config, extractors) and not any(e.orientation_invariant for e in extractors)


def view_plan(extractor: Extractor, config: Config, shape: tuple[int, ...]) -> list[tuple[str, int, bool]]:
    """Which rotated views of ``extractor``'s prepared arrays (of ``shape``) are embedded.

    Only weight-free extractors (cheap to run several times) that are not already invariant to orientation,
    with square prepared arrays, and only with ``features.rotations`` (resolved from ``auto`` by
    :func:`collect_features`).
    """
    if config.features.rotations is not True or not extractor.weight_free:
        return []
    if extractor.orientation_invariant or len(shape) < 2 or shape[0] != shape[1]:
        return []
    mirrored = uses_mirror(config.features, extractor)
    return list(ROTATED_VIEWS) + (list(MIRRORED_ROTATED_VIEWS) if mirrored else [])


# Batches decoded ahead of the model: enough to hide decoding behind a model call, few enough that memory
# stays flat (each VGG16 batch of 32 images is about 19 MB of float32).
PREFETCH_BATCHES = 2


@dataclass
class ExtractStats:
    """Where the vectors of a scan came from (each decoded image counts once).

    Attributes:
        cached: found in the feature cache by path, size and modification time.
        reused: found in the cache by content (a moved, renamed or copied file).
        identical: byte-identical to another file of this scan; that file's vectors were copied.
        extracted: decoded and run through the extractor.
    """

    cached: int = 0
    reused: int = 0
    identical: int = 0
    extracted: int = 0


@dataclass
class FeatureSet:
    """The features of every image under some paths (what :func:`collect_features` returns).

    Attributes:
        paths: absolute roots that were scanned.
        images: every image that decoded, aligned with the rows of every embeddings.
        extractors: the extractors that really ran (after any offline fallback), in configured order; a
            model may be unloaded when every vector came from the cache.
        all_embeddings: one :class:`Embeddings` per extractor (views such as the mirror image included).
        skipped: files that could not be used, with reasons, sorted by path.
        config: the configuration used.
        stats: where the vectors came from.
        seconds: wall time of ``discover`` and ``decode_extract``.
    """

    paths: list[str]
    images: list[ImageRecord]
    extractors: list[Extractor]
    all_embeddings: list[Embeddings]
    skipped: list[Skipped]
    config: Config
    stats: ExtractStats
    seconds: dict[str, float]

    def subset(self, rows: Sequence[int]) -> FeatureSet:
        """The images ``rows`` (indices into ``images``) with their vectors; the rest stays the same."""
        index = np.asarray(rows, dtype=np.int64)
        return replace(
            self,
            images=[self.images[i] for i in rows],
            all_embeddings=[e.take(index) for e in self.all_embeddings],
        )

    @property
    def extractor(self) -> Extractor:
        """The first extractor: its similarity is the one reported, and ``similar``/``tune`` rank by it."""
        return self.extractors[0]

    @property
    def embeddings(self) -> Embeddings:
        """The first extractor's embeddings."""
        return self.all_embeddings[0]


def collect_features(
    paths: Sequence[str | Path],
    config: Config | None = None,
    *,
    exclude: Sequence[Path] = (),
    progress: ProgressFn | None = None,
    warn: WarnFn | None = None,
    first_only: bool = False,
    extractors: Sequence[Extractor] | None = None,
    runner: Runner | None = None,
) -> FeatureSet:
    """Discover the images under ``paths`` and get their features, through the feature cache.

    This is the first half of :func:`find_duplicates`, and where ``similar`` and ``tune`` get their features
    (``first_only``: only the first configured extractor, which they rank by). Unchanged files are read from
    the cache (``cache.enabled``, ``cache.dir``) without being decoded; when every file is cached no model
    is loaded (TensorFlow is not imported). Reads files, never modifies anything but the cache.
    ``extractors`` made beforehand from ``config.features`` (a server keeps its models loaded) are used
    instead of new ones. A ``runner`` decodes and embeds the files that must be extracted elsewhere
    (:func:`extract_all`).

    Raises:
        InputError: a path does not exist.
        WeightsError: model weights cannot be obtained and no fallback is allowed.
    """
    config = config or Config()
    warn = _once(warn)  # one warning per problem, not one per extractor's cache
    seconds: dict[str, float] = {}
    for path in paths:  # cheap checks first: a typo in a path must not wait for TensorFlow
        stat_root(path)
    # Weights before the walk: a missing weights file should fail before a long walk over the folders.
    if extractors is None:
        extractors = make_extractors(config.features, warn=warn, lazy=True)
    if config.features.rotations == AUTO:
        config = replace(
            config, features=replace(config.features, rotations=rotations_wanted(config, extractors))
        )
    if first_only:
        extractors = extractors[:1]

    t0 = time.perf_counter()
    if progress:
        progress("discover", 0, None)
    files, skipped = discover(paths, config.discover, exclude=exclude, progress=progress)
    seconds["discover"] = time.perf_counter() - t0
    if progress:  # every file found that looks like an image: what the summary calls "Images found"
        progress("discover", len(files) + len(skipped), len(files) + len(skipped))

    t0 = time.perf_counter()
    stats = ExtractStats()
    with ExitStack() as stack:
        caches = [
            stack.enter_context(opened_cache(config.cache, *cache_identity(e, config), warn))
            for e in extractors
        ]
        images, all_embeddings, failed = extract_all(
            files, extractors, config, progress=progress, caches=caches, stats=stats, runner=runner
        )
    seconds["decode_extract"] = time.perf_counter() - t0
    return FeatureSet(
        paths=[os.path.abspath(p) for p in paths],
        images=images,
        extractors=list(extractors),
        all_embeddings=all_embeddings,
        skipped=sorted(skipped + failed, key=lambda s: s.path),
        config=config,
        stats=stats,
        seconds=seconds,
    )


def extract_features(
    files: Sequence[ImageFile],
    extractor: Extractor,
    config: Config,
    *,
    progress: ProgressFn | None = None,
    cache: FeatureCache | None = None,
    stats: ExtractStats | None = None,
) -> tuple[list[ImageRecord], Embeddings, list[Skipped]]:
    """:func:`extract_all` with one extractor (and its cache)."""
    images, embeddings, skipped = extract_all(
        files, [extractor], config, progress=progress, caches=[cache], stats=stats
    )
    return images, embeddings[0], skipped


def _layout(extractor: Extractor, config: Config) -> list[tuple[str, int, bool]]:
    """The views ``extractor`` embeds for every image, in storage order: ``(name, quarter turns, mirrored
    first)``; the image itself, its mirror image with :func:`~dedup.features.uses_mirror`, then the rotated
    views of :func:`view_plan`."""
    shape = extractor.prepare(Image.new("RGB", (32, 32))).shape
    views = [("identity", 0, False)] + (
        [("hflip", 0, True)] if uses_mirror(config.features, extractor) else []
    )
    return views + view_plan(extractor, config, shape)


def cache_identity(extractor: Extractor, config: Config) -> tuple[dict[str, Any], int]:
    """Identity and row length of ``extractor``'s cache: each cached vector is every view of
    :func:`_layout` concatenated."""
    layout = _layout(extractor, config)
    info = {**extractor.info(), "views": [name for name, _, _ in layout]}
    return info, extractor.dim * len(layout)


@dataclass
class _Extraction:
    """The state of one :func:`extract_all` call: one vector stack per extractor (every view of its layout
    side by side, rows aligned with ``files``), and per file index what is known so far."""

    files: Sequence[ImageFile]
    caches: list[FeatureCache | None]
    stacks: list[np.ndarray]
    shapes: dict[int, tuple[int, int]] = field(default_factory=dict)  # (width, height) of decoded images
    reasons: dict[int, str] = field(default_factory=dict)  # skip reason of files that did not decode
    digests: dict[int, str] = field(default_factory=dict)  # content digests computed by the pre-pass

    @property
    def all_cached(self) -> bool:
        """Every extractor has an open cache (an image counts as cached only when all of them have it)."""
        return bool(self.caches) and all(c is not None for c in self.caches)

    def take(self, i: int, entries: Sequence[Entry]) -> None:
        """File ``i`` takes cached vectors (one entry per extractor)."""
        for stack, entry in zip(self.stacks, entries, strict=True):
            stack[i] = entry.vector
        self.shapes[i] = (entries[0].width, entries[0].height)

    def store(self, indices: Sequence[int]) -> None:
        """Write the vectors of ``indices`` to every open cache."""
        for stack, cache in zip(self.stacks, self.caches, strict=True):
            if cache is not None:
                cache.store(
                    Row(f.path, f.size, _mtime_ns(f), self.digests.get(i), *self.shapes[i], stack[i], None)
                    for i, f in ((i, self.files[i]) for i in indices)
                )

    def from_cache(self) -> list[int]:
        """Step 1: files whose path, size and mtime every cache knows take those vectors; returns the rest."""
        todo = list(range(len(self.files)))
        if not self.all_cached:
            return todo
        keys = [(f.path, f.size, _mtime_ns(f)) for f in self.files]
        found = [c.lookup(keys, mirror=False) for c in self.caches if c is not None]
        hits = set(found[0]).intersection(*found[1:])
        for i in hits:
            self.take(i, [f[i] for f in found])
        return [i for i in todo if i not in hits]

    def by_content(self, todo: list[int]) -> tuple[list[int], dict[int, int], list[int]]:
        """Step 2: the exact-duplicate pre-pass over ``todo``.

        Files sharing their size with another file (every file with caches, so moved files are found) get a
        content digest; a byte-identical copy of an earlier file takes its vectors later, a file whose bytes
        every cache knows under another path takes them now.

        Returns:
            ``(representatives, copies, reused)``: files to decode, copy -> the file it is identical to,
            files served by content from the caches.
        """
        sizes = Counter(f.size for f in self.files)
        need = todo if self.all_cached else [i for i in todo if sizes[self.files[i].size] > 1]
        self.digests = _digests([self.files[i].path for i in need], need)
        first: dict[tuple[int, str], int] = {}
        copies: dict[int, int] = {}
        reused: list[int] = []
        representatives: list[int] = []
        for i in todo:
            digest = self.digests.get(i)
            if digest is not None:
                key = (self.files[i].size, digest)
                if key in first:
                    copies[i] = first[key]
                    continue
                first[key] = i
                if self.all_cached:
                    known = [c.by_content(key[0], digest, mirror=False) for c in self.caches if c is not None]
                    if all(k is not None for k in known):
                        self.take(i, [k for k in known if k is not None])
                        reused.append(i)
                        continue
            representatives.append(i)
        return representatives, copies, reused

    def embed(
        self, batch: list[int], loaded: list[_Loaded], extractors: Sequence[Extractor], layouts: list[_View]
    ) -> None:
        """Step 3, one batch: record what failed to decode, embed every view of the rest, cache them."""
        ok = [(i, item) for i, item in zip(batch, loaded, strict=True) if not isinstance(item, Skipped)]
        for i, item in zip(batch, loaded, strict=True):
            if isinstance(item, Skipped):
                self.reasons[i] = item.reason
        if not ok:
            return
        rows = [i for i, _ in ok]
        for e, (extractor, layout) in enumerate(zip(extractors, layouts, strict=True)):
            self.stacks[e][rows] = embed_views(
                np.stack([arrays[e] for _, (_, arrays) in ok]), extractor, layout
            )
        for i, (record, _) in ok:
            self.shapes[i] = (record.width, record.height)
        self.store(rows)

    def accept(self, batch: list[int], done: EmbeddedBatch) -> int:
        """Step 3 done elsewhere (:data:`Runner`), one batch: its vectors, sizes and skip reasons, cached.
        Files of ``batch`` already accepted (a block a cluster ran twice) are left out; returns how many
        were new."""
        fresh = [k for k, i in enumerate(batch) if i not in self.shapes and i not in self.reasons]
        ok = [k for k in fresh if done.reasons[k] is None]
        for k in fresh:
            reason = done.reasons[k]
            if reason is not None:
                self.reasons[batch[k]] = reason
        if ok:
            position = {k: r for r, k in enumerate(k for k in range(len(batch)) if done.reasons[k] is None)}
            rows = [batch[k] for k in ok]
            for stack, vectors in zip(self.stacks, done.vectors, strict=True):
                stack[rows] = vectors[[position[k] for k in ok]]
            for k in ok:
                self.shapes[batch[k]] = done.shapes[k]
            self.store(rows)
        return len(fresh)

    def copy_twins(self, copies: dict[int, int]) -> int:
        """Step 4: byte-identical copies take their twin's vectors (or its skip reason); returns how many
        got vectors."""
        for i, source in copies.items():
            if source in self.shapes:
                for stack in self.stacks:
                    stack[i] = stack[source]
                self.shapes[i] = self.shapes[source]
            else:
                self.reasons[i] = self.reasons[source]
        return sum(1 for i in copies if i in self.shapes)


_View = list[tuple[str, int, bool]]


def extract_all(
    files: Sequence[ImageFile],
    extractors: Sequence[Extractor],
    config: Config,
    *,
    progress: ProgressFn | None = None,
    caches: Sequence[FeatureCache | None] | None = None,
    stats: ExtractStats | None = None,
    runner: Runner | None = None,
) -> tuple[list[ImageRecord], list[Embeddings], list[Skipped]]:
    """Vectors of ``files`` for every extractor: from the caches when they have them, else decoded (once)
    in threads and embedded in batches.

    1. Files whose path, size and modification time match a row of every extractor's cache take those
       vectors and size (no decode).
    2. Exact-duplicate pre-pass: files sharing their size with another file of the scan (every remaining
       file when caches are used, so that moved files can be found by content) get a blake2b digest of
       their bytes. Byte-identical files are embedded once and the others take copies of the vectors (so
       they group with similarity 1.0); a file whose bytes every cache knows under another path reuses them.
    3. The rest are decoded in worker threads while the models run, at most :data:`PREFETCH_BATCHES`
       batches ahead (memory stays flat), and embedded in batches of ``features.batch_size``. With
       mirroring (:func:`~dedup.features.uses_mirror`) each batch is embedded a second time mirrored
       (prepared arrays are (height, width[, channels]), so the mirror image is a flip of axis 2); with
       ``features.rotations`` weight-free extractors also embed the rotated views of :func:`view_plan`.
       New vectors are written to the caches batch by batch. With a ``runner`` (the Ray engine,
       :mod:`dedup.distributed`) another engine decodes and embeds the files (:func:`embed_batch`) and
       this step only takes its batches in, in whatever order they come, and writes them to the caches.

    Args:
        files: images to embed (as returned by :func:`~dedup.images.discover`).
        extractors: the extractors (lazily made ones are loaded here, only if something must be extracted).
        config: configuration (``features``, ``decode``).
        progress: optional ``(phase, done, total)`` callback, phase ``"extract"``.
        caches: an open :class:`~dedup.cache.FeatureCache` per extractor (see :func:`cache_identity`), or
            None entries / None for no cache.
        stats: filled with the counts of where vectors came from, if given.
        runner: decodes and embeds the files of step 3 elsewhere (see :data:`Runner`); None = here, in
            threads.

    Returns:
        ``(images, embeddings, skipped)``: the images that decoded (in the order of ``files``), one
        :class:`Embeddings` per extractor (float32 rows aligned with ``images``), and the files that could
        not be decoded.
    """
    stats = stats if stats is not None else ExtractStats()
    n = len(files)
    layouts = [_layout(e, config) for e in extractors]
    work = _Extraction(
        files,
        list(caches) if caches is not None else [None] * len(extractors),
        [
            np.zeros((n, e.dim * len(lay)), dtype=np.float32)
            for e, lay in zip(extractors, layouts, strict=True)
        ],
    )
    if progress:
        progress("extract", 0, n)
    todo = work.from_cache()
    stats.cached = done = n - len(todo)
    if progress and done:
        progress("extract", done, n)
    representatives, copies, reused = work.by_content(todo)
    stats.reused = len(reused)
    done += len(reused)
    if representatives and runner is None:  # a runner loads the models where it embeds
        for extractor in extractors:
            ensure_loaded(extractor)
    if runner is not None:  # another engine decodes and embeds; this process stays the one cache writer
        for positions, embedded in runner([files[i] for i in representatives], extractors, layouts, config):
            done += work.accept([representatives[p] for p in positions], embedded)
            if progress:
                progress("extract", done, n)
        lost = [i for i in representatives if i not in work.shapes and i not in work.reasons]
        if lost:  # a runner retries until every file has a result, or raises
            raise RuntimeError(f"the {config.scale.engine} engine returned no result for {len(lost)} images")
    else:
        position = 0
        for loaded in _decoded_batches([files[i] for i in representatives], extractors, config):
            batch = representatives[position : position + len(loaded)]
            position += len(loaded)
            work.embed(batch, loaded, extractors, layouts)
            done += len(loaded)
            if progress:
                progress("extract", done, n)
    stats.extracted = len(representatives) - len(work.reasons)  # images that really went through the models
    stats.identical = work.copy_twins(copies)
    work.store([i for i in [*reused, *copies] if i in work.shapes])
    if progress and n:
        progress("extract", n, n)

    keep = [i for i in range(n) if i in work.shapes]
    images = [ImageRecord(files[i].path, files[i].size, files[i].mtime, *work.shapes[i]) for i in keep]
    skipped = [Skipped(files[i].path, work.reasons[i]) for i in sorted(work.reasons)]
    out = []
    for extractor, layout, stack in zip(extractors, layouts, work.stacks, strict=True):
        d = extractor.dim
        kept = stack[keep]
        views = {
            name: np.ascontiguousarray(kept[:, d * v : d * (v + 1)]) for v, (name, _, _) in enumerate(layout)
        }
        out.append(Embeddings(views.pop("identity"), views.pop("hflip", None), tuple(views.items())))
    return images, out, skipped


def _once(warn: WarnFn | None) -> WarnFn | None:
    """``warn`` passing each distinct message on once (every extractor opens the same cache file)."""
    if warn is None:
        return None
    seen: set[str] = set()

    def once(message: str) -> None:
        if message not in seen:
            seen.add(message)
            warn(message)

    return once


def _mtime_ns(f: ImageFile) -> int:
    """The file's st_mtime_ns (from discover, or a fresh stat when unknown; -1 if it cannot be read)."""
    if f.mtime_ns >= 0:
        return f.mtime_ns
    try:
        return os.stat(f.path).st_mtime_ns
    except OSError:
        return -1


def _digests(paths: Sequence[str], indices: Sequence[int]) -> dict[int, str]:
    """Content digests of ``paths`` (keyed by ``indices``), read in threads; unreadable files are left out
    (decoding reports them)."""

    def digest(path: str) -> str | None:
        try:
            return content_digest(path)
        except OSError:
            return None

    if not paths:
        return {}
    with ThreadPoolExecutor(max_workers=_decode_workers(), thread_name_prefix="dedup-digest") as pool:
        try:
            found = pool.map(digest, paths, chunksize=64)
            return {i: d for i, d in zip(indices, found, strict=True) if d is not None}
        except BaseException:  # Ctrl-C: drop the queued files instead of digesting them all first
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _decode_workers() -> int:
    """Decoder threads: one per core (at most 4). Pillow releases the GIL while decoding and resizing."""
    return max(1, min(4, os.cpu_count() or 1))


def _draft_size(extractors: Sequence[Extractor], config: Config) -> int | None:
    """The side JPEG draft mode may decode down to: what the most demanding extractor needs (None = full
    size, when ``decode.draft`` is off or some extractor needs the full image)."""
    sizes = [e.decode_size for e in extractors]
    return None if not config.decode.draft or None in sizes else max(s for s in sizes if s is not None)


def decode_prepared(
    f: ImageFile, extractors: Sequence[Extractor], config: Config, draft: int | None
) -> _Loaded:
    """One file decoded (``decode`` settings, JPEG draft down to ``draft`` px) and prepared for every
    extractor, or the reason it was skipped."""
    try:
        image, width, height = open_image(
            f.path,
            max_pixels=config.decode.max_pixels,
            draft_size=draft,
            reduce_above=config.decode.reduce_above,
        )
    except ImageError as e:
        return Skipped(f.path, str(e))
    record = ImageRecord(path=f.path, size=f.size, mtime=f.mtime, width=width, height=height)
    return record, [e.prepare(image) for e in extractors]


def embed_views(prepared: np.ndarray, extractor: Extractor, layout: _View) -> np.ndarray:
    """Stacked ``prepare`` outputs of shape (n, height, width[, channels]) -> every view of ``layout``
    embedded and concatenated: float32 of shape (n, extractor.dim * len(layout))."""
    parts = []
    for _, turns, flip in layout:
        x = np.flip(prepared, axis=2) if flip else prepared
        x = np.rot90(x, turns, axes=(1, 2)) if turns else x
        parts.append(extractor.embed(np.ascontiguousarray(x)))
    return np.concatenate(parts, axis=1)


@dataclass
class EmbeddedBatch:
    """Step 3 of :func:`extract_all` for one batch of files, done by :func:`embed_batch` (anywhere).

    Attributes:
        shapes: per file, ``(width, height)`` of the decoded image (``(0, 0)`` when skipped).
        reasons: per file, why it was skipped, or None when it decoded.
        vectors: per extractor, float32 of shape (files that decoded, dim * views), in file order.
    """

    shapes: list[tuple[int, int]]
    reasons: list[str | None]
    vectors: list[np.ndarray]


def embed_batch(
    files: Sequence[ImageFile], extractors: Sequence[Extractor], layouts: Sequence[_View], config: Config
) -> EmbeddedBatch:
    """Decode, prepare and embed every view of ``files`` with loaded ``extractors`` (one thread): what an
    engine other than the local one runs per batch (:data:`Runner`)."""
    draft = _draft_size(extractors, config)
    loaded = [decode_prepared(f, extractors, config, draft) for f in files]
    ok = [item for item in loaded if not isinstance(item, Skipped)]
    vectors = [
        embed_views(np.stack([arrays[e] for _, arrays in ok]), extractor, layout)
        if ok
        else np.zeros((0, extractor.dim * len(layout)), dtype=np.float32)
        for e, (extractor, layout) in enumerate(zip(extractors, layouts, strict=True))
    ]
    return EmbeddedBatch(
        shapes=[(0, 0) if isinstance(x, Skipped) else (x[0].width, x[0].height) for x in loaded],
        reasons=[x.reason if isinstance(x, Skipped) else None for x in loaded],
        vectors=[np.asarray(v, dtype=np.float32) for v in vectors],
    )


# An engine that decodes and embeds step 3's files elsewhere: ``runner(files, extractors, layouts, config)``
# yields ``(positions into files, EmbeddedBatch)`` per finished batch, in any order, each file at least once.
Runner = Callable[
    [Sequence[ImageFile], Sequence[Extractor], Sequence[_View], Config],
    Iterator[tuple[list[int], EmbeddedBatch]],
]


def _decoded_batches(
    files: Sequence[ImageFile], extractors: Sequence[Extractor], config: Config
) -> Iterator[list[_Loaded]]:
    """Yield batches of decoded+prepared images, in order, decoding up to :data:`PREFETCH_BATCHES` batches
    ahead in worker threads (a bounded queue: memory does not grow with the number of files)."""
    size = config.features.batch_size
    draft = _draft_size(extractors, config)

    def load(f: ImageFile) -> _Loaded:
        return decode_prepared(f, extractors, config, draft)

    with ThreadPoolExecutor(max_workers=_decode_workers(), thread_name_prefix="dedup-decode") as pool:
        pending: deque[list[Future[_Loaded]]] = deque()
        try:
            for start in range(0, len(files), size):
                pending.append([pool.submit(load, f) for f in files[start : start + size]])
                if len(pending) >= PREFETCH_BATCHES:
                    yield [fut.result() for fut in pending.popleft()]
            while pending:
                yield [fut.result() for fut in pending.popleft()]
        except BaseException:  # Ctrl-C (or the caller stopped): do not decode the queued batches first
            pool.shutdown(wait=False, cancel_futures=True)
            raise

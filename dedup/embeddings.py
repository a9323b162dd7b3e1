"""Feature vectors and their views; the one place that converts similarity <-> distance.

Users think in cosine similarity; Annoy's angular metric returns ``sqrt(2 * (1 - cos))``; DBSCAN wants a
distance. :func:`convert` (and its shorthands :func:`to_distance` / :func:`to_similarity`) is the only code
that converts between these units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Unit = Literal["similarity", "cosine", "angular"]

# Float32 vectors of identical images can differ in the 7th digit; distances this small count as equal.
TOLERANCE = 1e-6
_PAIR_CHUNK = 1 << 16


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Scale each row to unit L2 norm.

    Args:
        vectors: array of shape (n, dim).

    Returns:
        float32 array of shape (n, dim); rows of norm 0 stay all-zero instead of becoming NaN.
    """
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)


@dataclass(frozen=True)
class Embeddings:
    """Feature vectors of the scanned images, optionally with those of their mirror images and other views.

    Attributes:
        vectors: float32 array of shape (n_images, dim), L2-normalised rows.
        mirrored: float32 array of the same shape holding the vectors of the horizontally mirrored images,
            or None. When present, two images are as similar as their best match directly or mirrored, so a
            flipped copy counts as a duplicate.
        views: further ``(name, vectors)`` views of every image, e.g. ``("rot90", ...)`` for the images
            rotated by 90 degrees; matched like ``mirrored``. A name containing ``flip`` marks a mirror
            image (e.g. ``vflip``, ``hflip+rot90``).
    """

    vectors: np.ndarray
    mirrored: np.ndarray | None = None
    views: tuple[tuple[str, np.ndarray], ...] = ()

    def __len__(self) -> int:
        return len(self.vectors)

    def concat(self, other: Embeddings) -> Embeddings:
        """The rows of ``self`` followed by those of ``other`` (same extractor and views)."""
        if (self.mirrored is None) != (other.mirrored is None) or [n for n, _ in self.views] != [
            n for n, _ in other.views
        ]:
            raise ValueError("cannot concatenate embeddings with different views")
        mirrored = None if self.mirrored is None else np.concatenate([self.mirrored, other.mirrored])
        views = tuple(
            (n, np.concatenate([a, b])) for (n, a), (_, b) in zip(self.views, other.views, strict=True)
        )
        return Embeddings(np.concatenate([self.vectors, other.vectors]), mirrored, views)

    def subset(self, rows: np.ndarray) -> Embeddings:
        """The rows ``rows`` (int indices) of every view, as a new :class:`Embeddings` (copies)."""
        mirrored = None if self.mirrored is None else self.mirrored[rows]
        return Embeddings(self.vectors[rows], mirrored, tuple((n, v[rows]) for n, v in self.views))

    @property
    def view_names(self) -> tuple[str, ...]:
        """Names of the views :meth:`match` reports: ``identity``, ``hflip`` (the mirror), then ``views``."""
        return ("identity", "hflip", *(name for name, _ in self.views))

    def other_views(self) -> list[tuple[int, np.ndarray]]:
        """Every view but the image itself: ``(index into view_names, vectors)``, the mirror image first."""
        out = [] if self.mirrored is None else [(1, self.mirrored)]
        return out + [(2 + k, vecs) for k, (_, vecs) in enumerate(self.views)]

    def match(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Best cosine similarity of the pairs ``(a[i], b[i])`` over every view, and which view gave it.

        Returns:
            ``(similarity, view)``: float64 array of shape (len(a),) in [-1, 1], and an int array of
            indices into :attr:`view_names` (0 = the images as they are; a view wins only when it beats the
            direct match by more than :data:`TOLERANCE`).
        """
        a = np.asarray(a, dtype=np.int64)
        b = np.asarray(b, dtype=np.int64)
        sim = np.empty(len(a), dtype=np.float64)
        view = np.zeros(len(a), dtype=np.int64)
        v = self.vectors
        others = self.other_views()
        for start in range(0, len(a), _PAIR_CHUNK):
            s = slice(start, start + _PAIR_CHUNK)
            va, vb = v[a[s]], v[b[s]]
            best = np.einsum("ij,ij->i", va, vb, dtype=np.float64)
            which = np.zeros(len(best), dtype=np.int64)
            for index, o in others:
                other = np.maximum(
                    np.einsum("ij,ij->i", o[a[s]], vb, dtype=np.float64),
                    np.einsum("ij,ij->i", va, o[b[s]], dtype=np.float64),
                )
                better = other > best + TOLERANCE
                best = np.where(better, other, best)
                which[better] = index
            sim[s] = best
            view[s] = which
        return np.clip(sim, -1.0, 1.0), view

    def similarity(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cosine similarity of the pairs ``(a[i], b[i])`` (index arrays of equal length).

        Returns:
            ``(similarity, mirrored)``: float64 array of shape (len(a),) in [-1, 1], and a bool array that is
            True where the best match was between one image and the other's mirror image.
        """
        sim, view = self.match(a, b)
        reflection = np.array(["flip" in name for name in self.view_names], dtype=bool)
        return sim, reflection[view]


def convert(value: float | np.ndarray, source: Unit, target: Unit) -> float | np.ndarray:
    """Convert between cosine similarity, cosine distance and Annoy's angular distance.

    Args:
        value: a number or array in ``source`` units. ``similarity`` is cosine similarity in [-1, 1];
            ``cosine`` is cosine distance ``1 - similarity`` in [0, 2]; ``angular`` is Annoy's angular
            distance ``sqrt(2 * (1 - similarity))`` in [0, 2] (the Euclidean distance of unit vectors).
        source: unit of ``value``.
        target: unit wanted.

    Returns:
        ``value`` in ``target`` units (same shape). Values are clipped to the valid range of the target.
    """
    units = ("similarity", "cosine", "angular")
    if source not in units or target not in units:
        raise ValueError(f"units must be one of {units}, got {source!r} -> {target!r}")
    v = np.asarray(value, dtype=np.float64)
    if source == "similarity":
        sim = v
    elif source == "cosine":
        sim = 1.0 - v
    else:
        sim = 1.0 - v * v / 2.0
    sim = np.clip(sim, -1.0, 1.0)
    if target == "similarity":
        out = sim
    elif target == "cosine":
        out = 1.0 - sim
    else:
        out = np.sqrt(2.0 * (1.0 - sim))
    return float(out) if out.ndim == 0 else out


def to_distance(similarity: float | np.ndarray) -> float | np.ndarray:
    """Cosine distance ``1 - similarity`` (in [0, 2]) of cosine similarities; see :func:`convert`."""
    return convert(similarity, "similarity", "cosine")


def to_similarity(distance: float | np.ndarray) -> float | np.ndarray:
    """Cosine similarity ``1 - distance`` (in [-1, 1]) of cosine distances; see :func:`convert`."""
    return convert(distance, "cosine", "similarity")

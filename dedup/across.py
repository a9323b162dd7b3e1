"""Which folders a scan covers beyond its paths, and ``--across A B`` (train / test leakage).

- :func:`scan_roots`: the scanned paths plus the reference folders (``keep.reference``) and the two
  ``cluster.across`` folders that no given path already covers, so ``dedup scan photos/ --reference
  originals/`` looks at both.
- :func:`reference_folders`: the folders whose images are always kept and never moved or deleted: the
  ``keep.reference`` folders, and with ``--across A B`` also A (so pruning a leakage report removes B's
  copies and never touches A).
- :func:`pair_mask`: with ``--across A B`` only a pair of an image under A with one under B can be a
  duplicate; every other pair is blocked before it is verified.
- :func:`leakage`: how many images of B have a duplicate in A (the report's ``stats.across``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp

from dedup.config import Config
from dedup.ignore import PairMask
from dedup.keep import in_reference


class _HasPath(Protocol):
    @property
    def path(self) -> str: ...


def _covered(folder: str, paths: Sequence[str]) -> bool:
    return in_reference(folder, [p for p in paths if os.path.isdir(p)]) or folder in paths


def scan_roots(paths: Sequence[str | Path], config: Config) -> list[str | Path]:
    """``paths`` plus every reference / across folder that none of them contains (in that order)."""
    given = [os.path.normpath(os.path.abspath(p)) for p in paths]
    out: list[str | Path] = list(paths)
    for folder in (*config.keep.reference, *config.cluster.across):
        if not _covered(folder, given):
            given.append(folder)
            out.append(folder)
    return out


def reference_folders(config: Config) -> tuple[str, ...]:
    """``keep.reference`` plus, with ``cluster.across`` A B, the folder A."""
    across = config.cluster.across
    return tuple(dict.fromkeys((*config.keep.reference, *across[:1])))


def sides(images: Sequence[_HasPath], config: Config) -> np.ndarray | None:
    """Per image 0 (under A), 1 (under B) or -1 (neither; an image under both counts as A's), or None
    without ``cluster.across``."""
    across = config.cluster.across
    if not across:
        return None
    a, b = across
    return np.array(
        [0 if in_reference(im.path, [a]) else 1 if in_reference(im.path, [b]) else -1 for im in images],
        dtype=np.int64,
    )


def pair_mask(images: Sequence[_HasPath], config: Config) -> PairMask | None:
    """With ``cluster.across``: True for every pair that is not one image of A with one of B."""
    side = sides(images, config)
    if side is None:
        return None

    def mask(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        sa, sb = side[np.asarray(a, dtype=np.int64)], side[np.asarray(b, dtype=np.int64)]
        return np.asarray(~(((sa == 0) & (sb == 1)) | ((sa == 1) & (sb == 0))), dtype=bool)

    return mask


def leakage(images: Sequence[_HasPath], graph: sp.spmatrix, config: Config) -> dict[str, Any] | None:
    """The ``--across`` summary: folders, images under each, and the images of B with a duplicate in A
    (an edge of the duplicate ``graph`` to an image of A); None without ``cluster.across``."""
    side = sides(images, config)
    if side is None:
        return None
    coo = sp.coo_matrix(graph)
    leaked: set[int] = set()
    for i, j in zip(coo.row.tolist(), coo.col.tolist(), strict=True):
        if side[i] == 1 and side[j] == 0:
            leaked.add(i)
        elif side[j] == 1 and side[i] == 0:
            leaked.add(j)
    a, b = config.cluster.across
    return {
        "a": a,
        "b": b,
        "a_images": int(np.count_nonzero(side == 0)),
        "b_images": int(np.count_nonzero(side == 1)),
        "b_with_duplicate_in_a": len(leaked),
    }

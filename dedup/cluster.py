"""Duplicate groups: DBSCAN over the sparse neighbour graph, the chaining guard, and the kept image of each
group (chosen by :mod:`dedup.keep`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from dedup.embeddings import TOLERANCE, Embeddings
from dedup.ignore import PairMask, keep_apart
from dedup.keep import HasImageFacts, choose_keep

# (members, keep) -> (similarity, mirrored, linked) of each member to the kept image; see form_groups.
ProgressFn = Callable[[str, int, "int | None"], None]
LinkFn = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Group:
    """A duplicate group: indices into the scanned images, the kept one first.

    Attributes:
        keep: index of the kept (representative) image.
        members: indices of every member, the kept image first, then by decreasing similarity to it.
        similarities: cosine similarity of each member to the kept image (1.0 for the kept image itself).
        mirrored: per member, True when it resembles the kept image as a mirror image (a flipped copy).
    """

    keep: int
    members: tuple[int, ...]
    similarities: tuple[float, ...]
    mirrored: tuple[bool, ...]


def dbscan_labels(graph: sp.csr_matrix, *, eps: float, min_samples: int) -> np.ndarray:
    """DBSCAN on a precomputed sparse cosine-distance graph (the same labels as scikit-learn's
    ``DBSCAN(metric="precomputed")``, without importing scikit-learn, which costs a re-scan ~1.4 s).

    A point is a core point when at least ``min_samples`` points (itself included) lie within ``eps``;
    clusters are the connected components of core points, numbered in the order of their first point; a
    non-core point within ``eps`` of a core point joins the lowest-numbered such cluster (as scikit-learn's
    expansion in index order does); every other point is noise (-1).

    Args:
        graph: csr_matrix of shape (n, n); stored entries are distances (explicit zeros count), absent
            entries are "too far".
        eps: cosine-distance radius (``1 - threshold``).
        min_samples: points (itself included) within ``eps`` needed for a core point.

    Returns:
        int array of shape (n,): cluster label per image, -1 for images in no group.
    """
    n = graph.shape[0]
    if n == 0:
        return np.empty(0, dtype=np.int64)
    g = sp.coo_matrix(graph)
    near = (g.data <= eps + TOLERANCE) & (g.row != g.col)
    rows, cols = g.row[near], g.col[near]
    adjacency = sp.csr_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n))
    adjacency = ((adjacency + adjacency.T) > 0).astype(np.int8)
    core = adjacency.getnnz(axis=1) + 1 >= min_samples
    labels = np.full(n, -1, dtype=np.int64)
    core_ids = np.flatnonzero(core)
    if not len(core_ids):
        return labels
    _, comp = connected_components(adjacency[core_ids][:, core_ids], directed=False)
    _, first = np.unique(comp, return_index=True)  # components numbered by their first (lowest) point
    order = np.empty(len(first), dtype=np.int64)
    order[np.argsort(first, kind="stable")] = np.arange(len(first))
    labels[core_ids] = order[comp]
    border = adjacency[~core][:, core_ids].tocsr()  # non-core points' links to core points
    for k, i in enumerate(np.flatnonzero(~core)):
        linked = border.indices[border.indptr[k] : border.indptr[k + 1]]
        if len(linked):
            labels[i] = labels[core_ids[linked]].min()
    return labels


def form_groups(
    labels: np.ndarray,
    embeddings: Embeddings,
    graph: sp.csr_matrix,
    images: Sequence[HasImageFacts],
    *,
    threshold: float,
    policy: str,
    link: LinkFn | None = None,
    progress: ProgressFn | None = None,
    reference: Sequence[str] = (),
    apart: PairMask | None = None,
) -> tuple[list[Group], int]:
    """Turn DBSCAN labels into groups whose every member is within ``threshold`` of the kept image.

    DBSCAN grows groups by single links, so A~B~C~... can end up joining images whose ends are unrelated.
    For each cluster the kept image is chosen by ``policy``; members less similar to it than ``threshold``
    are split off, and the split-off members are grouped again among themselves (connected components of
    the neighbour graph restricted to them, with the same guard), so no member is ever reported beside a
    kept image it does not resemble.

    Args:
        labels: int array of shape (n,), DBSCAN labels (-1 = noise).
        embeddings: the images' vectors (similarity to the kept image uses :meth:`Embeddings.similarity`).
        graph: the sparse neighbour graph DBSCAN ran on (used to regroup split-off members).
        images: facts of each image (for the keep policy), aligned with ``embeddings``.
        threshold: cosine similarity every member must reach against its kept image.
        policy: keep policy, see :func:`choose_keep`.
        link: optional replacement of the threshold test (e.g. :meth:`dedup.verify.Verifier.link`, which
            verifies each member against the kept image): ``link(members, keep)`` returns each member's
            similarity and mirror flag to the kept image and whether it stays (``linked``).
        progress: optional callback ``("cluster", clusters done, DBSCAN clusters)``.
        reference: folders whose images are kept when a group has any (:func:`dedup.keep.choose_keep`).
        apart: pairs that must never share a group (the ignore list): members that form such a pair with
            a member that stays are split off too (:func:`dedup.ignore.keep_apart`), whatever links them.

    Returns:
        ``(groups, chain_splits)``: groups sorted by size (largest first, then by kept path), and the number
        of images moved out of the DBSCAN cluster they were first put in.
    """
    clusters: dict[int, list[int]] = {}
    for i, label in enumerate(labels.tolist()):
        if label >= 0:
            clusters.setdefault(label, []).append(i)
    groups: list[Group] = []
    splits = 0
    initial = [sorted(m) for m in clusters.values()]
    if progress:
        progress("cluster", 0, len(initial))
    for done, first in enumerate(initial, start=1):
        pending = [first]
        while pending:  # the cluster, then the parts split off it, then theirs...
            members = pending.pop()
            if len(members) < 2:
                continue
            keep = members[choose_keep([images[i] for i in members], policy, reference)]
            if link is None:
                sims, flips = embeddings.similarity(np.asarray(members), np.full(len(members), keep))
                close = (sims >= threshold - TOLERANCE) | (np.asarray(members) == keep)
            else:
                sims, flips, close = link(np.asarray(members), keep)
            inside = [m for m, c in zip(members, close.tolist(), strict=True) if c]
            outside = [m for m, c in zip(members, close.tolist(), strict=True) if not c]
            if apart is not None and len(inside) > 1:
                order = sorted(range(len(inside)), key=lambda j: -float(sims[close][j]))
                _, go = keep_apart([inside[j] for j in order], keep, apart)
                close = close & ~np.isin(np.asarray(members), go)
                inside = [m for m in inside if m not in go]
                outside += go
            if outside:
                splits += len(outside)
                pending.extend(_components(graph, outside))
            if len(inside) >= 2:
                groups.append(_make_group(keep, inside, sims[close], flips[close]))
        if progress:
            progress("cluster", done, len(initial))
    groups.sort(key=lambda g: (-len(g.members), images[g.keep].path))
    return groups, splits


def _components(graph: sp.csr_matrix, nodes: list[int]) -> list[list[int]]:
    """Connected components of ``graph`` restricted to ``nodes`` (as lists of original indices)."""
    sub = graph[nodes][:, nodes]
    _, comp = connected_components(sub, directed=False)
    parts: dict[int, list[int]] = {}
    for node, c in zip(nodes, comp.tolist(), strict=True):
        parts.setdefault(c, []).append(node)
    return list(parts.values())


def _make_group(keep: int, members: list[int], sims: np.ndarray, flips: np.ndarray) -> Group:
    """A group with the kept image first, then members by decreasing similarity (index breaks ties)."""
    order = sorted(range(len(members)), key=lambda j: (members[j] != keep, -sims[j], members[j]))
    return Group(
        keep=keep,
        members=tuple(members[j] for j in order),
        similarities=tuple(1.0 if members[j] == keep else float(sims[j]) for j in order),
        mirrored=tuple(bool(flips[j]) and members[j] != keep for j in order),
    )

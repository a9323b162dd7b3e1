"""Scale benchmark worker: index + neighbour graph + DBSCAN + groups on synthetic vectors, in this process.

Run by ``bench/run_bench.py scale`` once per size in a fresh subprocess, so ``ru_maxrss`` is the peak memory
of that size alone (it counts C allocations such as Annoy's, which tracemalloc cannot see).

Data: ``n`` L2-normalised 512-d Gaussian vectors; 5 % of them are the bases of planted duplicate groups of
2-4 images: each other member is its base plus Gaussian noise (sigma 0.0102 per dimension, i.e. cosine about
0.975 to the base and 0.95 between members, above the 0.90 threshold); unrelated 512-d vectors have cosine
about N(0, 1/512), far below it. Recall = planted pairs found in one group / planted pairs.

``peak_rss_mb`` is this process (vectors, graph, DBSCAN); ``peak_rss_worker_mb`` the largest query worker,
whose resident pages are mostly the memory-mapped Annoy file shared with the other worker through the page
cache.

With ``--partitions P`` the same vectors go through the partitioned path instead (:mod:`dedup.shards`:
k-means on a sample, border images in two partitions, each partition's neighbour graph in turn, decisions
merged, DBSCAN and the chaining guard once).

Usage: python bench/scale.py N [--seed S] [--partitions P]   (prints one JSON line)
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from dataclasses import dataclass

import numpy as np

DIM = 512
NOISE = 0.0102
THRESHOLD = 0.90


@dataclass(frozen=True)
class _Image:
    path: str
    size: int
    mtime: float
    width: int
    height: int


def planted(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(vectors, truth)``: float32 (n, 512) unit rows and the planted group id per row (-1 = none)."""
    rng = np.random.default_rng(seed)
    vectors = np.empty((n, DIM), dtype=np.float32)
    truth = np.full(n, -1, dtype=np.int64)
    n_groups = n // 20
    sizes = rng.integers(2, 5, size=n_groups)
    while sizes.sum() > n:
        sizes = sizes[:-1]
    row = 0
    for g, size in enumerate(sizes.tolist()):
        base = rng.standard_normal(DIM).astype(np.float32)
        base /= np.linalg.norm(base)
        vectors[row] = base
        for j in range(1, size):
            v = base + rng.standard_normal(DIM).astype(np.float32) * NOISE
            vectors[row + j] = v / np.linalg.norm(v)
        truth[row : row + size] = g
        row += size
    for start in range(row, n, 65536):  # unrelated images, in blocks to keep the peak low
        stop = min(start + 65536, n)
        block = rng.standard_normal((stop - start, DIM)).astype(np.float32)
        vectors[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    order = rng.permutation(n)
    return np.ascontiguousarray(vectors[order]), truth[order]


def _pairs(labels: np.ndarray) -> set[tuple[int, int]]:
    members: dict[int, list[int]] = {}
    for i, g in enumerate(labels.tolist()):
        if g >= 0:
            members.setdefault(g, []).append(i)
    return {(a, b) for m in members.values() for x, a in enumerate(m) for b in m[x + 1 :]}


def run(n: int, seed: int) -> dict[str, object]:
    from dedup.cluster import dbscan_labels, form_groups
    from dedup.config import IndexConfig
    from dedup.embeddings import Embeddings, convert
    from dedup.index import neighbour_graph

    cfg = IndexConfig()
    t0 = time.perf_counter()
    vectors, truth = planted(n, seed)
    t_data = time.perf_counter() - t0
    embeddings = Embeddings(vectors)
    eps = float(convert(THRESHOLD, "similarity", "cosine"))
    t0 = time.perf_counter()
    graph = neighbour_graph(
        embeddings, eps=eps, k=cfg.neighbours, n_trees=cfg.n_trees, search_k=cfg.search_k, seed=cfg.seed
    )
    t_index = time.perf_counter() - t0
    t0 = time.perf_counter()
    labels = dbscan_labels(graph, eps=eps, min_samples=2)
    images = [_Image(f"/synthetic/{i:08d}", 1000, 0.0, 100, 100) for i in range(n)]
    groups, splits = form_groups(labels, embeddings, graph, images, threshold=THRESHOLD, policy="path")
    t_cluster = time.perf_counter() - t0
    found = np.full(n, -1, dtype=np.int64)
    for g, group in enumerate(groups):
        found[list(group.members)] = g
    true_pairs, found_pairs = _pairs(truth), _pairs(found)
    hit = len(true_pairs & found_pairs)
    return {
        "n": n,
        "dim": DIM,
        "seed": seed,
        "n_trees": cfg.n_trees,
        "neighbours": cfg.neighbours,
        "planted_pairs": len(true_pairs),
        "recall": round(hit / len(true_pairs), 4) if true_pairs else None,
        "precision": round(hit / len(found_pairs), 4) if found_pairs else None,
        "groups": len(groups),
        "edges": int(graph.nnz // 2),
        "seconds_data": round(t_data, 2),
        "seconds_index_graph": round(t_index, 2),
        "seconds_cluster": round(t_cluster, 2),
        "seconds_total": round(t_index + t_cluster, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        # largest query worker (from 50k vectors on); its RSS counts the shared, memory-mapped index pages
        "peak_rss_worker_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
    }


def run_partitioned(n: int, seed: int, partitions: int) -> dict[str, object]:
    """The partitioned path (dedup.shards, local engine: one partition after the other in this process) on
    the same planted vectors: recall of the planted pairs, and of the pairs the single index finds."""
    from dedup.cluster import dbscan_labels, form_groups
    from dedup.config import Config, ScaleConfig
    from dedup.embeddings import Embeddings
    from dedup.shards import merge, partition_images, search_partition, works
    from dedup.verify import GRAPH_EPS, Thresholds, Verifier

    sc = ScaleConfig()
    vectors, truth = planted(n, seed)
    embeddings = Embeddings(vectors)
    images = [_Image(f"/synthetic/{i:08d}", 1000, 0.0, 100, 100) for i in range(n)]
    th = Thresholds(plain=THRESHOLD, candidate=THRESHOLD, sure=THRESHOLD)
    config = Config()
    verifier = Verifier(["synthetic"], [embeddings], [th], verify=False, store=None, config=config.verify)
    t0 = time.perf_counter()
    parts = partition_images(embeddings, partitions, sample=sc.sample, border=sc.border, seed=sc.seed)
    t_partition = time.perf_counter() - t0
    t0 = time.perf_counter()
    items = works(parts, images, [embeddings], ["synthetic"], [th], config, False)  # type: ignore[arg-type]
    merge((search_partition(w) for w in items), verifier)
    t_search = time.perf_counter() - t0
    t0 = time.perf_counter()
    graph = verifier.graph(n)
    labels = dbscan_labels(graph, eps=GRAPH_EPS, min_samples=2)
    groups, _ = form_groups(
        labels, embeddings, graph, images, threshold=THRESHOLD, policy="path", link=verifier.link
    )
    t_cluster = time.perf_counter() - t0
    found = np.full(n, -1, dtype=np.int64)
    for g, group in enumerate(groups):
        found[list(group.members)] = g
    true_pairs, found_pairs = _pairs(truth), _pairs(found)
    hit = len(true_pairs & found_pairs)
    sizes = [len(m) for m in parts.members if len(m)]
    return {
        "n": n,
        "partitions": partitions,
        "border": sc.border,
        "border_images": parts.border,
        "largest_partition": max(sizes),
        "images_in_partitions": int(sum(sizes)),
        "planted_pairs": len(true_pairs),
        "recall": round(hit / len(true_pairs), 4) if true_pairs else None,
        "precision": round(hit / len(found_pairs), 4) if found_pairs else None,
        "seconds_partition": round(t_partition, 2),
        "seconds_search": round(t_search, 2),
        "seconds_cluster": round(t_cluster, 2),
        "seconds_total": round(t_partition + t_search + t_cluster, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_rss_worker_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("n", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--partitions", type=int, default=0, help="run the partitioned path with P partitions"
    )
    args = parser.parse_args(argv)
    if args.partitions:
        print(json.dumps(run_partitioned(args.n, args.seed, args.partitions)))
    else:
        print(json.dumps(run(args.n, args.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

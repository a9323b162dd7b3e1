"""Partitioned duplicate search (dedup/shards.py) with the local engine, and the Ray engine's install hint."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from dedup import load_config
from dedup.embeddings import Embeddings, l2_normalize
from dedup.errors import EngineError
from dedup.pipeline import find_duplicates
from dedup.shards import partition_images

from imagegen import write_families


def _planted(n_bases: int, dim: int = 64, seed: int = 0) -> tuple[Embeddings, list[tuple[int, int]]]:
    """Random unit vectors, each with one near copy (cosine ~0.97); returns the pairs."""
    rng = np.random.default_rng(seed)
    bases = l2_normalize(rng.standard_normal((n_bases, dim)).astype(np.float32))
    copies = l2_normalize(bases + 0.25 * rng.standard_normal(bases.shape).astype(np.float32) / np.sqrt(dim))
    return Embeddings(np.concatenate([bases, copies])), [(i, n_bases + i) for i in range(n_bases)]


def test_every_image_is_in_a_partition_and_border_images_in_two() -> None:
    emb, _ = _planted(500)
    parts = partition_images(emb, 8, sample=400, border=0.05, seed=0)
    counts = np.zeros(len(emb), dtype=int)
    for members in parts.members:
        counts[members] += 1
        assert np.all(np.diff(members) > 0)  # sorted, no image twice in one partition
    assert counts.min() == 1 and counts.max() <= 2
    assert int((counts == 2).sum()) == parts.border > 0
    assert parts.count == 8 and parts.largest < len(emb)


def test_a_mirror_view_puts_the_image_in_the_partition_of_its_mirrored_copy() -> None:
    emb, _ = _planted(300)
    flipped = -emb.vectors  # a "mirror view" pointing the other way: nearest to another centroid
    with_view = Embeddings(emb.vectors, flipped)
    parts = partition_images(with_view, 4, sample=600, border=0.0, seed=1)
    direct = np.argmax(emb.vectors @ parts.centroids.T, axis=1)
    mirror = np.argmax(flipped @ parts.centroids.T, axis=1)
    assert np.any(direct != mirror)
    for i in range(len(emb)):
        assert i in parts.members[direct[i]] and i in parts.members[mirror[i]]


def test_no_border_loses_pairs_that_a_border_keeps() -> None:
    emb, pairs = _planted(2000, dim=32)

    def kept(border: float) -> float:
        parts = partition_images(emb, 16, sample=4000, border=border, seed=0)
        where: dict[int, set[int]] = {}
        for p, members in enumerate(parts.members):
            for i in members.tolist():
                where.setdefault(i, set()).add(p)
        return sum(bool(where[a] & where[b]) for a, b in pairs) / len(pairs)

    assert kept(0.0) < 1.0  # some planted pairs straddle a boundary
    assert kept(0.1) > kept(0.0)


def test_partitioned_scan_finds_the_single_index_groups(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    write_families(photos)
    base = {"features.extractor": "phash+thumb+color", "cache.enabled": False}
    single = find_duplicates([photos], load_config(overrides=base))
    parted = find_duplicates(
        [photos], load_config(overrides={**base, "scale.partitions": 3, "scale.border": 0.2})
    )
    groups = [sorted(single.images[m].path for m in g.members) for g in single.groups]
    assert [sorted(parted.images[m].path for m in g.members) for g in parted.groups] == groups
    assert parted.scale["partitions"] == 3 and single.scale == {"engine": "local", "partitions": 1}


def test_the_ray_engine_without_ray_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    write_families(tmp_path / "photos")
    with pytest.raises(EngineError, match=r"pip install 'dedup\[ray\]'"):
        find_duplicates([tmp_path / "photos"], load_config(overrides={"scale.engine": "ray"}))
    result = cli("scan", tmp_path / "photos", "--engine", "ray")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "Error: scale.engine ray needs Ray, which is not installed: pip install 'dedup[ray]'"
    ]

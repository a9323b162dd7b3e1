"""Peer tools on one folder, run inside bench/.venv-peers (never imports dedup; scored by run_bench.py).

Usage: bench/.venv-peers/bin/python bench/peers.py imagededup|imagehash FOLDER
Prints one JSON line: {"tool", "version", "seconds", "images", "groups": [[absolute paths], ...]}.
``seconds`` is the wall time of hashing + finding duplicates (after imports), like dedup's figure.
Both use a 64-bit DCT perceptual hash with a maximum Hamming distance of 10 (imagededup's default).
"""

from __future__ import annotations

import json
import os
import sys
import time

MAX_DISTANCE = 10
EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def components(nodes: list[str], edges: list[tuple[str, str]]) -> list[list[str]]:
    parent = {n: n for n in nodes}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        parent[find(a)] = find(b)
    groups: dict[str, list[str]] = {}
    for n in nodes:
        groups.setdefault(find(n), []).append(n)
    return [sorted(g) for g in groups.values() if len(g) > 1]


def run_imagededup(folder: str) -> dict:
    import imagededup
    from imagededup.methods import PHash

    t0 = time.perf_counter()
    dups = PHash(verbose=False).find_duplicates(
        image_dir=folder, max_distance_threshold=MAX_DISTANCE, recursive=True
    )
    seconds = time.perf_counter() - t0

    def full(key: str) -> str:
        return key if os.path.isabs(key) else os.path.join(folder, key)

    nodes = [full(k) for k in dups]
    edges = [(full(k), full(v)) for k, vs in dups.items() for v in vs]
    return {
        "tool": "imagededup PHash",
        "version": imagededup.__version__,
        "seconds": seconds,
        "images": len(nodes),
        "groups": components(nodes, edges),
    }


def run_imagehash(folder: str) -> dict:
    import imagehash
    import numpy as np
    from PIL import Image

    t0 = time.perf_counter()
    paths, bits = [], []
    for dirpath, _, names in os.walk(folder):
        for name in sorted(names):
            if os.path.splitext(name)[1].lower() not in EXTS:
                continue
            path = os.path.join(dirpath, name)
            try:
                with Image.open(path) as im:
                    h = imagehash.phash(im)
            except Exception:  # noqa: BLE001 - a peer's failure on a corrupt file = not hashed
                continue
            paths.append(path)
            bits.append(h.hash.flatten())
    b = np.array(bits, dtype=np.uint8) if bits else np.zeros((0, 64), dtype=np.uint8)
    dist = (b[:, None, :] != b[None, :, :]).sum(-1) if len(b) < 6000 else None
    edges = []
    if dist is not None:
        i, j = np.nonzero(np.triu(dist <= MAX_DISTANCE, 1))
        edges = [(paths[a], paths[c]) for a, c in zip(i.tolist(), j.tolist(), strict=True)]
    seconds = time.perf_counter() - t0
    return {
        "tool": "imagehash phash",
        "version": imagehash.__version__,
        "seconds": seconds,
        "images": len(paths),
        "groups": components(paths, edges),
    }


if __name__ == "__main__":
    tool, folder = sys.argv[1], os.path.abspath(sys.argv[2])
    out = run_imagededup(folder) if tool == "imagededup" else run_imagehash(folder)
    print(json.dumps(out))

"""The ignore list (dedup.ignore): its file, and scans that honour it -- a listed pair is never an edge and
never ends up in one group, also not through chaining; ``dedup ignore list|clear``."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from dedup.cluster import form_groups
from dedup.config import load_config
from dedup.embeddings import Embeddings
from dedup.errors import InputError
from dedup.ignore import IgnoreList, default_path, ignore_path, keep_apart, pair_mask
from dedup.pipeline import find_duplicates

from imagegen import make_photo

PHASH = {"features.extractor": "phash"}


def _cfg(listing: Path, **more: object):
    return load_config(overrides={**PHASH, "ignore.file": str(listing), **more})


@pytest.fixture
def trio(tmp_path: Path) -> Path:
    """One photo three times: an original and two re-encodes (one group of three)."""
    root = tmp_path / "trio"
    root.mkdir()
    photo = make_photo(4)
    photo.save(root / "a.jpg", quality=95)
    photo.save(root / "b.jpg", quality=70)
    photo.save(root / "c.jpg", quality=50)
    return root


def test_default_location_and_none(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_path() == tmp_path / "state" / "dedup" / "ignore.jsonl"
    assert ignore_path(load_config().ignore) == default_path()
    assert ignore_path(load_config(overrides={"ignore.file": "none"}).ignore) is None
    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_path() == Path.home() / ".local" / "state" / "dedup" / "ignore.jsonl"


def test_file_format_add_remove_clear(trio: Path, tmp_path: Path) -> None:
    listing = IgnoreList(tmp_path / "state" / "ignore.jsonl")
    assert listing.load() == [] and not listing.path.exists()
    a, b, c = (str(trio / n) for n in ("a.jpg", "b.jpg", "c.jpg"))
    assert listing.add([(a, b), (b, a), (a, c)], note="test") == 2  # (b, a) is the same pair
    assert listing.add([(a, b)]) == 0
    lines = [json.loads(line) for line in listing.path.read_text().splitlines()]
    assert len(lines) == 2 and lines[0]["version"] == 1 and lines[0]["note"] == "test"
    assert lines[0]["a"] == {"path": a, "size": os.path.getsize(a), "blake2b": lines[0]["a"]["blake2b"]}
    assert len(lines[0]["b"]["blake2b"]) == 32 and lines[0]["added"]
    with listing.path.open("a") as f:  # a damaged line is left out, not fatal
        f.write("{not json\n")
    assert len(listing.load()) == 2 and listing.problems == 1
    assert listing.remove([(c, a)]) == 1
    assert [(p.a.path, p.b.path) for p in listing.load()] == [(a, b)]
    assert listing.clear() == 1 and not listing.path.exists()
    with pytest.raises(InputError, match="cannot read"):
        listing.add([(a, str(trio / "missing.jpg"))])


def test_a_pair_is_its_content_moved_files_still_match_changed_ones_do_not(
    trio: Path, tmp_path: Path
) -> None:
    listing = IgnoreList(tmp_path / "ignore.jsonl")
    listing.add([(str(trio / "a.jpg"), str(trio / "b.jpg"))])
    moved = tmp_path / "elsewhere"
    shutil.move(str(trio), moved)
    images = [type("I", (), {"path": str(p), "size": p.stat().st_size})() for p in sorted(moved.iterdir())]
    mask = listing.mask(images)
    assert mask is not None
    assert mask(np.array([0, 0, 1]), np.array([1, 2, 2])).tolist() == [True, False, False]
    (moved / "b.jpg").write_bytes((moved / "b.jpg").read_bytes() + b"\0")  # new bytes: a fresh look
    images[1] = type("I", (), {"path": str(moved / "b.jpg"), "size": (moved / "b.jpg").stat().st_size})()
    assert listing.mask(images) is None


def test_scan_honours_the_ignore_list(trio: Path, tmp_path: Path) -> None:
    listing = tmp_path / "ignore.jsonl"
    result = find_duplicates([trio], _cfg(listing))
    assert [len(g.members) for g in result.groups] == [3]
    IgnoreList(listing).add([(str(trio / "a.jpg"), str(trio / "c.jpg"))])
    result = find_duplicates([trio], _cfg(listing))
    names = [{Path(result.images[m].path).name for m in g.members} for g in result.groups]
    assert all(not {"a.jpg", "c.jpg"} <= g for g in names)  # never grouped together
    assert {"a.jpg", "b.jpg"} in names  # the other pairs still are
    ev = result.verifier.evidence  # the pair was decided "ignored", never an edge
    ia, ic = (
        next(i for i, im in enumerate(result.images) if im.path.endswith(n)) for n in ("a.jpg", "c.jpg")
    )
    pair = ev.get((min(ia, ic), max(ia, ic)))
    assert pair is not None and pair.reason == "ignored" and not pair.edge
    off = find_duplicates([trio], _cfg(tmp_path / "other.jsonl"))  # another list: not honoured
    assert [len(g.members) for g in off.groups] == [3]
    none = find_duplicates([trio], load_config(overrides={**PHASH, "ignore.file": "none"}))
    assert [len(g.members) for g in none.groups] == [3]


def test_chaining_through_a_third_image_never_joins_an_ignored_pair() -> None:
    # b links to a and c (both kept-image candidates); a~c is ignored. Whatever is kept, a and c must
    # not share a group.
    v = np.array([[1.0, 0.0], [0.99, 0.141], [0.96, 0.28]], dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    emb = Embeddings(v)

    class Img:
        def __init__(self, p: str, w: int) -> None:
            self.path, self.size, self.mtime, self.width, self.height = p, 1, 0.0, w, 1

    import scipy.sparse as sp

    graph = sp.csr_matrix(np.ones((3, 3)) - np.eye(3))
    labels = np.zeros(3, dtype=np.int64)
    apart = pair_mask({(0, 2)})
    for widths in ([1, 5, 1], [5, 1, 1], [1, 1, 5]):  # keep b, a or c
        imgs = [Img(f"/{n}.jpg", w) for n, w in zip("abc", widths, strict=True)]
        groups, _ = form_groups(labels, emb, graph, imgs, threshold=0.5, policy="resolution", apart=apart)
        for g in groups:
            assert not {0, 2} <= set(g.members), (widths, groups)
    assert keep_apart([1, 0, 2], 1, apart) == ([1, 0], [2])


def test_ignore_cli_list_and_clear(cli, trio: Path, tmp_path: Path) -> None:
    listing = tmp_path / "state" / "dedup" / "ignore.jsonl"
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    result = cli("ignore", "list", env=env)
    assert result.exit_code == 0, result.output
    assert "no pairs" in result.stdout.lower() and str(listing) in result.stdout.replace("\n", "")
    IgnoreList(listing).add([(str(trio / "a.jpg"), str(trio / "b.jpg"))])
    result = cli("ignore", "list", env=env)
    assert result.exit_code == 0 and "a.jpg" in result.stdout and "b.jpg" in result.stdout
    result = cli("ignore", "list", "--json", env=env)
    assert json.loads(result.stdout.splitlines()[0])["a"]["path"] == str(trio / "a.jpg")
    result = cli("ignore", "clear", env=env)
    assert result.exit_code == 0 and "1" in result.stdout and not listing.exists()
    result = cli("ignore", "list", "--file", tmp_path / "x" / "y.jsonl")
    assert result.exit_code == 0, result.output
    assert "Example:" in cli("ignore", "--help").stdout

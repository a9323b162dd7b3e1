"""The persistent feature cache and the exact-duplicate pre-pass, as a user would notice them."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dedup import load_config
from dedup.cache import FILENAME, FeatureCache, Row, extractor_identity
from dedup.pipeline import collect_features, find_duplicates

from helpers import ROOT
from imagegen import make_photo


def cfg(cache_dir: Path, **overrides):
    return load_config(overrides={"features.extractor": "phash", "cache.dir": str(cache_dir), **overrides})


def write_photos(folder: Path, seeds: range) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in seeds:
        path = folder / f"p{seed:03d}.jpg"
        make_photo(seed, (160, 120)).save(path, quality=90)
        paths.append(path)
    return paths


def by_path(feats) -> dict[str, tuple[np.ndarray, np.ndarray | None, int, int]]:
    v, m = feats.embeddings.vectors, feats.embeddings.mirrored
    return {
        r.path: (v[i], None if m is None else m[i], r.width, r.height) for i, r in enumerate(feats.images)
    }


def assert_same_features(a, b) -> None:
    fa, fb = by_path(a), by_path(b)
    assert fa.keys() == fb.keys()
    for path, (v, m, w, h) in fa.items():
        v2, m2, w2, h2 = fb[path]
        np.testing.assert_array_equal(v, v2, err_msg=path)
        assert (m is None) == (m2 is None)
        if m is not None:
            np.testing.assert_array_equal(m, m2, err_msg=path)
        assert (w, h) == (w2, h2)


def no_cache(folder: Path, cache_dir: Path, **overrides):
    return collect_features([folder], cfg(cache_dir, **{"cache.enabled": False, **overrides}))


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    write_photos(tmp_path / "photos", range(12))
    return tmp_path / "photos"


def kill_writer_mid_write(folder: Path, preprocessing: str, rows: list[str]) -> None:
    """Start _WRITER (endless transactions of ``rows`` under ``preprocessing``) and SIGKILL it mid-write."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(folder), preprocessing, *rows],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    time.sleep(1.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def forbid_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_a, **_k):
        raise AssertionError("an image was decoded")

    monkeypatch.setattr("dedup.extract.open_image", refuse)


# ------------------------------------------------------------------------------------ hits and misses


def test_warm_scan_reads_every_vector_from_the_cache_without_decoding(photos, tmp_path, monkeypatch):
    cold = collect_features([photos], cfg(tmp_path / "c"))
    assert (cold.stats.cached, cold.stats.extracted) == (0, 12)
    assert (tmp_path / "c" / FILENAME).exists()
    forbid_decoding(monkeypatch)
    warm = collect_features([photos], cfg(tmp_path / "c"))
    assert (warm.stats.cached, warm.stats.extracted) == (12, 0)
    assert_same_features(warm, cold)
    monkeypatch.undo()
    assert_same_features(warm, no_cache(photos, tmp_path / "c"))


def test_new_images_are_the_only_ones_extracted(photos, tmp_path):
    collect_features([photos], cfg(tmp_path / "c"))
    write_photos(photos, range(100, 103))
    again = collect_features([photos], cfg(tmp_path / "c"))
    assert (again.stats.cached, again.stats.extracted) == (12, 3)
    assert_same_features(again, no_cache(photos, tmp_path / "c"))


def test_a_changed_file_is_extracted_again(photos, tmp_path):
    collect_features([photos], cfg(tmp_path / "c"))
    target = photos / "p003.jpg"
    make_photo(999, (200, 100)).save(target, quality=90)  # new content, new size and mtime
    again = collect_features([photos], cfg(tmp_path / "c"))
    assert (again.stats.cached, again.stats.extracted) == (11, 1)
    assert by_path(again)[str(target)][2:] == (200, 100)
    assert_same_features(again, no_cache(photos, tmp_path / "c"))


def test_a_touched_file_with_the_same_size_is_not_trusted(photos, tmp_path):
    collect_features([photos], cfg(tmp_path / "c"))
    target = photos / "p004.jpg"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    again = collect_features([photos], cfg(tmp_path / "c"))
    # same bytes under the same path: found again by content, not decoded
    assert (again.stats.cached, again.stats.reused, again.stats.extracted) == (11, 1, 0)


def test_a_renamed_file_reuses_its_vectors_by_content(photos, tmp_path, monkeypatch):
    collect_features([photos], cfg(tmp_path / "c"))
    (photos / "p005.jpg").rename(photos / "renamed.jpg")
    forbid_decoding(monkeypatch)
    again = collect_features([photos], cfg(tmp_path / "c"))
    assert (again.stats.cached, again.stats.reused, again.stats.extracted) == (11, 1, 0)
    monkeypatch.undo()
    assert_same_features(again, no_cache(photos, tmp_path / "c"))


def test_another_extractor_configuration_misses(photos, tmp_path):
    collect_features([photos], cfg(tmp_path / "c"))
    other = collect_features([photos], cfg(tmp_path / "c", **{"features.hash_size": 20}))
    assert (other.stats.cached, other.stats.extracted) == (0, 12)
    assert other.embeddings.vectors.shape == (12, 400)


def test_mirrored_vectors_are_cached_and_required_when_mirroring(photos, tmp_path):
    plain = collect_features([photos], cfg(tmp_path / "c", **{"features.mirror": False}))
    assert plain.embeddings.mirrored is None
    mirrored = collect_features([photos], cfg(tmp_path / "c", **{"features.mirror": True}))
    assert mirrored.stats.extracted == 12  # rows without mirror vectors cannot serve a mirrored scan
    assert mirrored.embeddings.mirrored is not None
    again = collect_features([photos], cfg(tmp_path / "c", **{"features.mirror": False}))
    assert again.stats.cached == 12  # the plain rows are still there: each set of views has its own rows
    assert_same_features(again, plain)


def test_disabled_cache_is_neither_read_nor_written(photos, tmp_path):
    feats = collect_features([photos], cfg(tmp_path / "c", **{"cache.enabled": False}))
    assert feats.stats.extracted == 12
    assert not (tmp_path / "c").exists()


def test_identity_ignores_the_weights_path_but_not_the_weights_bytes():
    a = {"name": "vgg16", "weights": "/x/a.h5", "weights_sha256": "01", "pooling": "avg", "input_size": 224}
    assert extractor_identity(a) == extractor_identity({**a, "weights": "/y/b.h5"})
    assert extractor_identity(a) != extractor_identity({**a, "weights_sha256": "02"})
    assert extractor_identity(a) != extractor_identity({**a, "pooling": "max"})
    assert extractor_identity(a) != extractor_identity({**a, "precision": "bfloat16"})


# ------------------------------------------------------------------------------------ exact duplicates


def test_byte_identical_files_are_embedded_once_and_group_at_similarity_one(tmp_path, monkeypatch):
    folder = tmp_path / "photos"
    originals = write_photos(folder, range(3))
    for i in range(3):
        (folder / f"copy{i}.jpg").write_bytes(originals[0].read_bytes())
    decoded: list[str] = []
    from dedup import extract

    real = extract.open_image

    def counting(path, **kw):
        decoded.append(path)
        return real(path, **kw)

    monkeypatch.setattr("dedup.extract.open_image", counting)
    for enabled in (False, True):
        decoded.clear()
        result = find_duplicates([folder], cfg(tmp_path / "c", **{"cache.enabled": enabled}))
        assert len(decoded) == 3, decoded  # one per distinct content
        assert result.sources is not None and result.sources.identical == 3
        (group,) = result.groups
        assert sorted(result.images[m].path for m in group.members) == sorted(
            [str(originals[0])] + [str(folder / f"copy{i}.jpg") for i in range(3)]
        )
        assert group.similarities == (1.0, 1.0, 1.0, 1.0)


def test_identical_copies_of_an_undecodable_file_are_all_skipped(tmp_path):
    folder = tmp_path / "photos"
    write_photos(folder, range(2))
    broken = (folder / "p000.jpg").read_bytes()[:400]
    (folder / "t1.jpg").write_bytes(broken)
    (folder / "t2.jpg").write_bytes(broken)
    feats = collect_features([folder], cfg(tmp_path / "c"))
    assert len(feats.images) == 2
    reasons = {Path(s.path).name: s.reason for s in feats.skipped}
    assert reasons["t1.jpg"] == reasons["t2.jpg"] == "truncated image"


# ------------------------------------------------------------------------------------ damage


def _damage_file(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 3]))
    elif how == "garble":
        rng = np.random.default_rng(0)
        for start in range(100, len(data), 997):
            data[start : start + 40] = rng.integers(0, 256, 40, dtype=np.uint8).tobytes()
        path.write_bytes(bytes(data))
    else:
        path.write_bytes(b"this is not a database at all" * 50)


def _checkpoint(cache_file: Path) -> None:
    conn = sqlite3.connect(cache_file)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


@pytest.mark.parametrize("how", ["truncate", "garble", "foreign"])
def test_a_damaged_cache_file_is_rebuilt_and_never_serves_wrong_vectors(photos, tmp_path, how):
    collect_features([photos], cfg(tmp_path / "c"))
    cache_file = tmp_path / "c" / FILENAME
    _checkpoint(cache_file)
    _damage_file(cache_file, how)
    warnings: list[str] = []
    feats = collect_features([photos], cfg(tmp_path / "c"), warn=warnings.append)
    assert_same_features(feats, no_cache(photos, tmp_path / "c"))
    assert feats.stats.cached + feats.stats.extracted == 12
    if how != "garble":  # garbled bytes may only hit row payloads, which the checksums catch silently
        assert any("damaged" in w for w in warnings), warnings
    # and the next scan is served from the rebuilt cache
    again = collect_features([photos], cfg(tmp_path / "c"))
    assert again.stats.cached == 12
    assert_same_features(again, feats)


def test_a_row_with_a_tampered_vector_is_ignored(photos, tmp_path):
    collect_features([photos], cfg(tmp_path / "c"))
    conn = sqlite3.connect(tmp_path / "c" / FILENAME)
    path = str(photos / "p002.jpg")
    vec = np.zeros(256, dtype="<f4")
    vec[0] = 1.0
    conn.execute("UPDATE features SET vector = ? WHERE path = ?", (vec.tobytes(), path))
    conn.commit()
    conn.close()
    feats = collect_features([photos], cfg(tmp_path / "c"))
    assert (feats.stats.cached, feats.stats.extracted) == (11, 1)
    assert_same_features(feats, no_cache(photos, tmp_path / "c"))


_WRITER = """
import sys, numpy as np
from pathlib import Path
from dedup.cache import FeatureCache, Row
info = {"name": "phash", "hash_size": 16, "dim": 256, "input_size": 64, "preprocessing": sys.argv[2]}
cache = FeatureCache.open(Path(sys.argv[1]), info, 256)
rng = np.random.default_rng(0)
print("ready", flush=True)
i = 0
while True:  # many transactions of many rows with wrong vectors for the real paths, until killed
    rows = [Row(p, int(s), int(m), None, 1, 1, v, v) for p, s, m in [l.split("\\t") for l in sys.argv[3:]]
            for v in [rng.standard_normal(256).astype("f4")]] * 50
    cache.store(rows)
    i += 1
"""


def test_a_writer_killed_mid_write_leaves_no_wrong_vectors(photos, tmp_path):
    from dedup.features.weightfree import PHASH_PREPROCESSING

    folder = tmp_path / "c"
    collect_features([photos], cfg(folder))  # the real vectors
    files = sorted(photos.iterdir())
    # A writer with *another* identity (other preprocessing) hammers the same file, and is killed -9
    # in the middle of its transactions; the real rows must be untouched and the file usable.
    args = [f"{p}\t{p.stat().st_size}\t{p.stat().st_mtime_ns}" for p in files]
    kill_writer_mid_write(folder, PHASH_PREPROCESSING + "/other", args)
    feats = collect_features([photos], cfg(folder))
    assert feats.stats.cached == 12
    assert_same_features(feats, no_cache(photos, folder))


def test_same_identity_writer_killed_mid_write_then_scan_is_correct(photos, tmp_path):
    from dedup.features.weightfree import PHASH_PREPROCESSING

    folder = tmp_path / "c"
    files = sorted(photos.iterdir())
    args = [f"{p}\t{p.stat().st_size}\t{p.stat().st_mtime_ns}" for p in files]
    # same identity as the real extractor, but wrong vectors *and* wrong mtimes (+1), like a stale writer
    stale = [a.rsplit("\t", 1)[0] + "\t" + str(int(a.rsplit("\t", 1)[1]) + 1) for a in args]
    kill_writer_mid_write(folder, PHASH_PREPROCESSING, stale)
    feats = collect_features([photos], cfg(folder))
    assert feats.stats.cached == 0  # mtimes differ: nothing trusted
    assert_same_features(feats, no_cache(photos, folder))


def test_an_unwritable_cache_folder_only_warns(photos, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    warnings: list[str] = []
    feats = collect_features([photos], cfg(blocker / "sub"), warn=warnings.append)
    assert feats.stats.extracted == 12
    assert any("without the feature cache" in w for w in warnings), warnings


def test_store_and_lookup_round_trip(tmp_path):
    info = {"name": "x", "dim": 4, "preprocessing": "t"}
    with FeatureCache.open(tmp_path, info, 4) as cache:
        v = np.array([1, 0, 0, 0], dtype=np.float32)
        cache.store([Row("/a.jpg", 10, 5, "d1", 3, 2, v, None)])
        hit = cache.lookup([("/a.jpg", 10, 5), ("/b.jpg", 1, 1)], mirror=False)
        assert list(hit) == [0] and (hit[0].width, hit[0].height) == (3, 2)
        assert cache.lookup([("/a.jpg", 11, 5)], mirror=False) == {}  # other size
        assert cache.lookup([("/a.jpg", 10, 6)], mirror=False) == {}  # other mtime
        np.testing.assert_array_equal(hit[0].vector, v)
        assert cache.lookup([("/a.jpg", 10, 5)], mirror=True) == {}
        assert cache.by_content(10, "d1", mirror=False) is not None
        assert cache.by_content(10, "d2", mirror=False) is None


# ------------------------------------------------------------------------------------ CLI


def test_cli_no_cache_info_and_clear(cli, photos, tmp_path):
    config = tmp_path / "cfg.yaml"
    config.write_text(f"cache:\n  dir: {tmp_path / 'c'}\n")
    base = ["--config", str(config), "--features", "phash"]
    result = cli("scan", str(photos), *base, "--no-cache")
    assert result.exit_code == 0, result.output
    assert "12 extracted" in result.output
    assert not (tmp_path / "c" / FILENAME).exists()
    result = cli("scan", str(photos), *base)
    assert result.exit_code == 0, result.output
    result = cli("scan", str(photos), *base)
    assert "12 from the cache" in result.output and "0 extracted" in result.output

    result = cli("cache", "info", "--config", str(config), "--json")
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert facts["entries"] == 12 and facts["file"] == str(tmp_path / "c" / FILENAME)
    assert facts["extractors"][0]["identity"]["name"] == "phash"
    result = cli("cache", "info", "--config", str(config))
    assert result.exit_code == 0 and "12" in result.stdout

    result = cli("cache", "clear", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "c" / FILENAME).exists()
    result = cli("cache", "info", "--config", str(config), "--json")
    assert json.loads(result.stdout)["entries"] == 0


def test_cache_dir_defaults_to_xdg_cache_home(tmp_path, monkeypatch):
    from dedup.cache import cache_dir
    from dedup.config import CacheConfig

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir(CacheConfig()) == tmp_path / "xdg" / "dedup"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir(CacheConfig()) == Path.home() / ".cache" / "dedup"
    assert cache_dir(CacheConfig(dir=str(tmp_path / "x"))) == tmp_path / "x"


# ------------------------------------------------------------------------------------ no TensorFlow


@pytest.mark.tf
def test_warm_vgg16_scan_does_not_import_tensorflow(tmp_path):
    folder = tmp_path / "photos"
    write_photos(folder, range(3))
    code = (
        "import sys\n"
        "from dedup import load_config\n"
        "from dedup.pipeline import collect_features\n"
        "c = load_config(overrides={'features.weights': 'none', 'features.input_size': 32,\n"
        f"    'cache.dir': {str(tmp_path / 'c')!r}}})\n"
        f"f = collect_features([{str(folder)!r}], c)\n"
        "print(f.stats.cached, f.stats.extracted, 'tensorflow' in sys.modules)\n"
    )

    def run() -> str:
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.split()

    assert run() == ["0", "3", "True"]
    assert run() == ["3", "0", "False"]


@pytest.mark.parametrize("command", ["similar", "tune"])
def test_similar_and_tune_read_the_cache_and_honour_no_cache(cli, photos, tmp_path, monkeypatch, command):

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    args = (
        ["similar", str(photos / "p000.jpg"), "--in", str(photos)]
        if command == "similar"
        else ["tune", str(photos)]
    )
    args += ["--features", "phash"]
    first = cli(*args)
    assert first.exit_code == 0, first.output
    cache_file = tmp_path / "xdg" / "dedup" / FILENAME
    assert cache_file.exists()  # features were stored
    forbid_decoding(monkeypatch)  # a second run reads every vector from the cache
    assert cli(*args).exit_code == 0
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg2"))
    assert cli(*args, "--no-cache").exit_code == 0
    assert not (tmp_path / "xdg2" / "dedup" / FILENAME).exists()


# ------------------------------------------------------------------- hostile and unlucky input (issue 16)


def test_a_cache_problem_is_warned_about_once_not_once_per_extractor(photos, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    warnings: list[str] = []
    config = cfg(blocker / "sub", **{"features.extractor": "phash+thumb+color"})
    feats = collect_features([photos], config, warn=warnings.append)
    assert len(feats.extractors) == 3 and feats.stats.extracted == 12
    assert len([w for w in warnings if "feature cache" in w]) == 1, warnings


def test_leftovers_of_a_read_only_connection_are_repaired_and_not_left_by_cache_info(photos, tmp_path):
    from dedup.cache import info

    folder = tmp_path / "c"
    collect_features([photos], cfg(folder))
    db = folder / FILENAME
    side = [Path(f"{db}-wal"), Path(f"{db}-shm")]
    assert not any(p.exists() for p in side)  # the scan's last connection removed them
    info(folder)
    assert not any(p.exists() for p in side), "cache info left -wal/-shm files behind"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)  # what a read-only run leaves behind
    conn.execute("SELECT COUNT(*) FROM features").fetchone()
    conn.close()
    assert all(p.exists() for p in side)
    for p in side:
        p.chmod(0o444)  # as SQLite makes them while the database itself is read-only
    with FeatureCache.open(folder, {"name": "x", "dim": 4, "preprocessing": "t"}, 4) as cache:
        assert cache.enabled
        # (as root SQLite could write them anyway; for their owner they would stay read-only forever)
        assert [p.stat().st_mode & 0o777 for p in side] == [db.stat().st_mode & 0o777] * 2


def test_a_name_that_is_not_utf8_is_scanned_without_the_cache(tmp_path):
    name = os.fsdecode(b"x\xff.jpg")  # "x\udcff.jpg"
    info = {"name": "x", "dim": 4, "preprocessing": "t"}
    with FeatureCache.open(tmp_path, info, 4) as cache:
        v = np.array([1, 0, 0, 0], dtype=np.float32)
        cache.store([Row(f"/{name}", 10, 5, "d1", 3, 2, v, None), Row("/ok.jpg", 10, 5, "d1", 3, 2, v, None)])
        assert cache.lookup([(f"/{name}", 10, 5), ("/ok.jpg", 10, 5)], mirror=False).keys() == {1}
        assert cache.enabled

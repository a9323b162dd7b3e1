"""Tests of the verify stage (dedup.verify), weight-free extractors and combined runs, on generated images."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from dedup import find_duplicates, load_config
from dedup.cache import VerifyCache
from dedup.config import AUTO, Config, FeaturesConfig
from dedup.embeddings import Embeddings
from dedup.errors import ConfigError
from dedup.features import make_extractor, make_extractors
from dedup.features.names import split_names
from dedup.features.weightfree import ColorExtractor, PHashExtractor, ThumbExtractor, trim_borders
from dedup.report import Report, from_result
from dedup.report.files import CSV_COLUMNS, to_csv
from dedup.verify import (
    KeypointStore,
    count_inliers,
    detect,
    keypoint_image,
    mirrored,
    verification_enabled,
)

from imagegen import letterbox, make_photo, studio_photo, write_verify_dataset

WEIGHT_FREE = {"features.extractor": "phash+thumb+color"}


def _gray(image: Image.Image) -> np.ndarray:
    return keypoint_image(image, 320)


# ----------------------------------------------------------------------------- inlier counting


def test_inliers_recover_a_known_similarity_transform():
    src = _gray(make_photo(11, (320, 240)))
    angle, scale = 25.0, 0.8
    matrix = cv2.getRotationMatrix2D((160.0, 120.0), angle, scale)
    warped = cv2.warpAffine(src, matrix, (320, 240), borderMode=cv2.BORDER_REFLECT)
    a, b = detect(src, 300), detect(warped, 300)
    match = count_inliers(a, b)
    assert match.inliers >= 12
    assert match.transform is not None
    np.testing.assert_allclose(match.transform, matrix, atol=3.0)  # translation in px; rotation/scale close
    np.testing.assert_allclose(match.transform[:, :2], matrix[:, :2], atol=0.03)


def test_unrelated_photos_have_almost_no_inliers():
    a = detect(_gray(make_photo(21, (320, 240))), 300)
    b = detect(_gray(make_photo(22, (320, 240))), 300)
    assert count_inliers(a, b).inliers < 8


def test_mirror_image_matches_only_against_mirrored_keypoints():
    image = make_photo(31, (320, 240))
    flipped = ImageOps.mirror(image)
    a = detect(_gray(image), 300)
    b = detect(_gray(flipped), 300)
    b_mirrored = detect(np.ascontiguousarray(_gray(flipped)[:, ::-1]), 300)
    assert count_inliers(a, b).inliers < 8  # SIFT is not mirror-invariant
    assert count_inliers(a, b_mirrored).inliers >= 12
    # the mirror image's keypoints derived from b (no second SIFT pass) match a as well as real ones do
    derived = mirrored(b)
    assert count_inliers(a, derived).inliers >= 0.6 * count_inliers(a, b_mirrored).inliers
    assert count_inliers(a, derived).inliers >= 12
    assert derived.descriptors.dtype == np.uint8 and len(derived) == len(b)
    np.testing.assert_array_equal(mirrored(derived).descriptors, b.descriptors)  # an involution


def test_empty_keypoints_give_zero_inliers():
    flat = np.full((100, 100), 128, np.uint8)
    kp = detect(flat, 100)
    assert len(kp) == 0
    assert count_inliers(kp, detect(_gray(make_photo(1)), 100)).inliers == 0


def _record(path):
    from dedup.images import ImageRecord

    st = path.stat()
    return ImageRecord(path=str(path), size=st.st_size, mtime=st.st_mtime, width=320, height=240)


def test_keypoint_store_computes_once_derives_the_mirror_and_persists(tmp_path):
    paths = []
    for seed in range(3):
        paths.append(tmp_path / f"{seed}.jpg")
        make_photo(41 + seed).save(paths[-1], quality=92)
    records = [_record(p) for p in paths]
    with VerifyCache.open(tmp_path / "cache") as cache:
        store = KeypointStore(records, Config(), cache=cache, workers=2, memory_images=2)
        store.prefetch([0, 0, 1])
        assert store.computed == 2
        first = store.get(0)
        mirror = store.get(0, mirrored=True)
        assert store.computed == 2  # the mirror image's keypoints are derived, not computed
        assert len(first) > 20 and len(mirror) == len(first)
        store.get(1)
        store.get(2)  # a third image: only two stay in memory, the least recently used (0) is dropped ...
        assert store.computed == 3 and len(store._memory) == 2 and 0 not in store._memory
        assert len(store.get(0)) == len(first) and store.computed == 3 and store.loaded == 1  # ... read back
    with VerifyCache.open(tmp_path / "cache") as cache:  # a later scan computes nothing
        again = KeypointStore(records, Config(), cache=cache)
        np.testing.assert_array_equal(again.get(0).descriptors, first.descriptors)
        assert again.computed == 0 and again.loaded == 1
    paths[0].write_bytes(paths[1].read_bytes())  # the file changed: its stored keypoints are not used
    with VerifyCache.open(tmp_path / "cache") as cache:
        changed = KeypointStore([_record(paths[0])], Config(), cache=cache)
        changed.get(0)
        assert changed.computed == 1


def test_without_a_cache_memory_stays_bounded_and_evicted_keypoints_are_recomputed(tmp_path):
    paths = []
    for seed in range(3):
        paths.append(tmp_path / f"{seed}.jpg")
        make_photo(51 + seed).save(paths[-1], quality=92)
    store = KeypointStore([_record(p) for p in paths], Config(), memory_images=1)
    for i in (0, 1, 2, 0):
        store.get(i)
    assert len(store._memory) == 1 and store.computed == 4


# ----------------------------------------------------------------------------- extractors


def test_thumb_is_invariant_to_brightness_and_contrast():
    image = make_photo(51)
    brighter = Image.eval(image, lambda v: min(255, int(v * 0.8 + 30)))
    ex = ThumbExtractor(16)
    v = ex.embed(np.stack([ex.prepare(image), ex.prepare(brighter), ex.prepare(make_photo(52))]))
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > 0.99 and v[0] @ v[2] < 0.8


def test_color_histogram_is_unit_norm_and_ignores_layout():
    image = make_photo(61)
    ex = ColorExtractor(16)
    v = ex.embed(
        np.stack([ex.prepare(image), ex.prepare(image.rotate(90, expand=True)), ex.prepare(make_photo(62))])
    )
    assert v.shape == (3, 256)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > 0.98 and v[0] @ v[2] < 0.9


def test_trim_borders_removes_letterbox_bars_only():
    image = make_photo(71, (400, 300))
    boxed = letterbox(image)
    assert boxed.size == (400, 400)
    assert abs(trim_borders(boxed).size[1] - 300) <= 2 and trim_borders(boxed).size[0] == 400
    assert trim_borders(image).size == image.size


# ----------------------------------------------------------------------------- combination parsing


def test_combination_parsing_and_errors():
    assert split_names("phash+thumb+color") == ["phash", "thumb", "color"]
    cfg = load_config(overrides={"features.extractor": "phash+color"})
    assert cfg.features.extractor == "phash+color"
    assert [e.name for e in make_extractors(cfg.features)] == ["phash", "color"]
    with pytest.raises(
        ConfigError,
        match=r"'resnet' in 'phash\+resnet' is not allowed; allowed values: vgg16, resnet50, mobilenet, "
        r"mobilenet_v2, efficientnet_b0, keras-model:PATH, onnx:PATH, phash",
    ):
        load_config(overrides={"features.extractor": "phash+resnet"})
    with pytest.raises(ConfigError, match="names an extractor twice"):
        load_config(overrides={"features.extractor": "phash+phash"})
    with pytest.raises(ConfigError, match="several extractors"):
        make_extractor(FeaturesConfig(extractor="phash+thumb"))
    with pytest.raises(
        ConfigError, match="features.offline_fallback: 'vgg16' is not allowed; allowed values: none"
    ):
        load_config(overrides={"features.offline_fallback": "vgg16"})
    with pytest.raises(
        ConfigError, match="verify.enabled: 'maybe' is not allowed; allowed values: auto, true, false"
    ):
        load_config(overrides={"verify.enabled": "maybe"})


def test_config_list_of_extractors_in_yaml(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("features:\n  extractor: [phash, color]\nverify:\n  enabled: false\n")
    cfg = load_config(f)
    assert cfg.features.extractor == "phash+color" and cfg.verify.enabled is False
    assert load_config().verify.enabled == AUTO


def test_verification_is_on_by_default_for_combined_extractors():
    cfg = Config()
    assert verification_enabled(cfg, [PHashExtractor(), ThumbExtractor()])
    assert not verification_enabled(cfg, [PHashExtractor()])  # a single extractor keeps its threshold

    class Heavy:
        weight_free = False

    assert not verification_enabled(cfg, [Heavy()])
    assert verification_enabled(cfg, [Heavy(), PHashExtractor()])  # a CNN with the weight-free descriptors
    assert verification_enabled(load_config(overrides={"verify.enabled": True}), [Heavy()])
    assert not verification_enabled(load_config(overrides={"verify.enabled": "false"}), [PHashExtractor()])


def test_embeddings_views_match_rotated_copies():
    v = np.eye(4, dtype=np.float32)
    rot = np.roll(v, 1, axis=1)  # image i's rotated vector is e_{i+1}
    emb = Embeddings(v, None, (("rot90", rot),))
    sim, view = emb.match(np.array([0, 0]), np.array([1, 2]))
    np.testing.assert_allclose(sim, [1.0, 0.0])
    assert [emb.view_names[k] for k in view] == ["rot90", "identity"]
    _, mirrored = emb.similarity(np.array([0]), np.array([1]))
    assert mirrored.tolist() == [False]  # a rotation is not a mirror image


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def verified(tmp_path_factory):
    truth = write_verify_dataset(tmp_path_factory.mktemp("verify") / "data")
    result = find_duplicates([truth["root"]], load_config(overrides=WEIGHT_FREE))
    return truth, result


def _group_of(result, path):
    for g in result.groups:
        paths = {result.images[m].path for m in g.members}
        if path in paths:
            return paths
    return {path}


@pytest.mark.parametrize(
    "transform", ["crop_20pct", "letterbox", "hflip", "rot90", "rotate_7deg", "text_overlay"]
)
def test_hard_variants_are_found(verified, transform):
    truth, result = verified
    assert result.verified
    assert truth["variants"][transform] in _group_of(result, truth["original"])


def test_unrelated_photos_and_same_background_objects_are_not_grouped(verified):
    truth, result = verified
    grouped = {result.images[m].path for g in result.groups for m in g.members}
    for path in truth["unrelated"] + truth["same_background"]:
        assert path not in grouped
    a, b = truth["same_background"]
    assert b not in _group_of(result, a)


def test_same_background_objects_look_alike_globally_but_fail_verification(verified):
    # the negative case must be a real test of verification: the pair is a candidate, then rejected
    truth, result = verified
    index = {r.path: i for i, r in enumerate(result.images)}
    a, b = (index[p] for p in truth["same_background"])
    ev = result.verifier.evaluate(np.array([[a, b]]))[0]
    assert ev.similarities["color"] > 0.97 and "color" in ev.proposed_by  # a colour look-alike
    assert ev.inliers is not None and ev.inliers < result.config.verify.min_inliers
    assert not ev.edge and ev.reason == "rejected"


def test_report_has_evidence_fields(verified):
    truth, result = verified
    report = json.loads(json.dumps(from_result(result).to_dict()))
    assert report["params"]["verified"] is True
    assert set(report["params"]["thresholds"]) == {"phash", "thumb", "color"}
    assert report["extractor"]["name"] == "phash+thumb+color"
    assert [e["name"] for e in report["extractor"]["extractors"]] == ["phash", "thumb", "color"]
    assert "verify" in report["stats"]["seconds"]
    reasons = set()
    for g in report["groups"]:
        keep = [m for m in g["members"] if m["path"] == g["keep"]]
        assert keep[0]["evidence"] == "keep" and keep[0]["inliers"] is None
        for m in g["members"]:
            assert set(m) >= {"similarity_to_keep", "inliers", "evidence", "proposed_by", "similarities"}
            reasons.add(m["evidence"])
            if m["evidence"] == "verified":
                assert m["inliers"] >= result.config.verify.min_inliers
            if m["evidence"] == "similar":
                assert m["inliers"] is None
    assert "verified" in reasons  # the crop cannot be found any other way
    rows = list(csv.DictReader(io.StringIO(to_csv(Report.from_dict(report)))))
    assert tuple(rows[0]) == CSV_COLUMNS
    verified_rows = [r for r in rows if r["evidence"] == "verified"]
    assert verified_rows and all(int(r["inliers"]) >= 12 for r in verified_rows)


def test_without_verification_look_alikes_are_grouped(verified):
    # what verification buys: the colour look-alikes on one background pass the colour threshold alone
    truth, _ = verified
    result = find_duplicates([truth["root"]], load_config(overrides={**WEIGHT_FREE, "verify.enabled": False}))
    assert not result.verified
    a, b = truth["same_background"]
    assert b in _group_of(result, a)
    assert truth["variants"]["hflip"] in _group_of(result, truth["original"])


def test_studio_photos_share_their_background():
    a, b = np.asarray(studio_photo(1, 5), dtype=np.int16), np.asarray(studio_photo(2, 5), dtype=np.int16)
    assert np.abs(a[:20] - b[:20]).mean() < 6  # same backdrop (only noise differs)
    assert np.abs(a[150:250, 100:200] - b[150:250, 100:200]).mean() > 20  # different objects


def test_path_of_an_unreadable_file_gives_no_keypoints(tmp_path):
    from dedup.images import ImageRecord

    rec = ImageRecord(path=str(tmp_path / "gone.jpg"), size=1, mtime=0.0, width=1, height=1)
    store = KeypointStore([rec], Config())
    assert len(store.get(0)) == 0 and 0 in store.failed


def test_report_paths_are_files(verified):
    truth, result = verified
    assert all(Path(r.path).is_file() for r in result.images)


def test_offline_vgg16_falls_back_to_the_weight_free_combination(monkeypatch, tmp_path):
    import dedup.features.weights as weights

    def offline(**kwargs):
        raise Exception("URL fetch failure")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(weights, "_keras_get_file", offline)
    warned: list[str] = []
    extractors = make_extractors(FeaturesConfig(extractor="vgg16+color"), warn=warned.append)
    # the fallback replaces vgg16 in place; color, already asked for, is not added twice and stands in
    assert [e.name for e in extractors] == ["phash", "thumb", "color"]
    assert len(warned) == 1 and "phash+thumb+color extractors instead" in warned[0]
    assert [e.info()["fallback_used"] for e in extractors] == [True, True, True]
    assert all(e.info()["requested"] == "vgg16" for e in extractors)

"""Tests of dedup.features.weightfree: phash properties (thumb, color and trim_borders: see test_verify)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from dedup.features.weightfree import PHASH_DEFAULT_THRESHOLD, ColorExtractor, PHashExtractor, ThumbExtractor

from imagegen import crop_fraction, jpeg_bytes, make_photo


def _reencoded(image: Image.Image, quality: int) -> Image.Image:
    return Image.open(io.BytesIO(jpeg_bytes(image, quality=quality))).convert("RGB")


def _phash(images: list[Image.Image], hash_size: int = 16) -> np.ndarray:
    ext = PHashExtractor(hash_size)
    return ext.embed(np.stack([ext.prepare(im) for im in images]))


# --------------------------------------------------------------------------------------------------- phash


def test_phash_identical_image_has_similarity_exactly_one() -> None:
    photo = make_photo(1)
    v = _phash([photo, photo.copy()])
    assert float(v[0] @ v[1]) == 1.0
    assert np.array_equal(v[0], v[1])


def test_phash_vectors_are_plus_minus_one_over_sqrt_dim_and_unit_norm() -> None:
    v = _phash([make_photo(s) for s in range(4)])
    assert v.dtype == np.float32 and v.shape == (4, 256)
    assert set(np.unique(v).tolist()) == {-1 / 16, 1 / 16}
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-6)
    # the median split sets about half of the bits
    assert all(100 <= int((row > 0).sum()) <= 156 for row in v)


@pytest.mark.parametrize("variant", ["jpeg_q30", "half_size", "jpeg_q50_of_half_size"])
def test_phash_near_duplicates_are_similar(variant: str) -> None:
    photo = make_photo(7)
    half = photo.resize((160, 120), Image.Resampling.BILINEAR)
    other = {
        "jpeg_q30": _reencoded(photo, 30),
        "half_size": half,
        "jpeg_q50_of_half_size": _reencoded(half, 50),
    }[variant]
    v = _phash([photo, other])
    assert float(v[0] @ v[1]) > 0.85


def test_phash_unrelated_images_are_dissimilar() -> None:
    v = _phash([make_photo(s) for s in range(10, 16)])
    sims = v @ v.T
    off_diagonal = sims[~np.eye(len(v), dtype=bool)]
    assert off_diagonal.max() < 0.6


def test_phash_cosine_equals_one_minus_twice_hamming_over_bits() -> None:
    photo = make_photo(3)
    v = _phash([photo, crop_fraction(photo, 0.08)])
    bits = v.shape[1]
    hamming = int(np.count_nonzero((v[0] > 0) != (v[1] > 0)))
    assert 0 < hamming < bits // 2  # a non-trivial example
    assert float(v[0] @ v[1]) == 1 - 2 * hamming / bits  # exact: every term is a multiple of 1/256


def test_phash_threshold_constant_in_hamming_terms() -> None:
    # 0.70 means at most 15 % of the bits differ: 38 of 256 (imagededup's default is 10 of 64)
    bits = 256
    assert max(h for h in range(bits + 1) if 1 - 2 * h / bits >= PHASH_DEFAULT_THRESHOLD) == 38


def test_phash_hash_size_sets_dim_and_sizes() -> None:
    ext = PHashExtractor(32)
    assert (ext.dim, ext.image_size, ext.decode_size) == (1024, 128, 128)
    prepared = ext.prepare(make_photo(2))
    assert prepared.shape == (128, 128) and prepared.dtype == np.float32
    v = ext.embed(prepared[None])
    assert v.shape == (1, 1024)
    np.testing.assert_allclose(np.linalg.norm(v), 1.0, atol=1e-6)


def test_phash_embed_checks_shape_and_accepts_empty_batch() -> None:
    ext = PHashExtractor(16)
    assert ext.embed(np.zeros((0, 64, 64), np.float32)).shape == (0, 256)
    with pytest.raises(ValueError, match="shape"):
        ext.embed(np.zeros((2, 32, 32), np.float32))


def test_phash_prepare_accepts_any_mode() -> None:
    ext = PHashExtractor(16)
    rgba = make_photo(4).convert("RGBA")
    assert np.array_equal(ext.prepare(rgba), ext.prepare(rgba.convert("RGB")))


@pytest.mark.parametrize("cls", [PHashExtractor, ThumbExtractor, ColorExtractor])
def test_weight_free_extractors_have_nothing_to_load(cls: Any) -> None:
    ex = cls()
    assert ex.load() is ex and ex.weight_free is True
    assert ex.orientation_invariant is (cls is ColorExtractor)  # a histogram ignores where colours are
    assert ex.info()["fallback_used"] is False and ex.info()["requested"] == ex.name

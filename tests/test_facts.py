"""Image facts for the keep policy ``best`` (dedup.facts) and the policy itself on generated copies: JPEG
re-encodes, resizes, crops, grayscale, lossless copies made from a JPEG, edited files, reference folders."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from dedup.config import load_config
from dedup.facts import GRID_RATIO, estimate_quality, grid_ratio, read_facts
from dedup.keep import choose_keep
from dedup.pipeline import find_duplicates
from dedup.report import from_result

from helpers import shared_data
from imagegen import crop_fraction, make_photo

MAX = 10**9


def _decoded(image: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


@pytest.mark.parametrize("quality", [10, 25, 50, 70, 75, 85, 90, 95, 100])
def test_estimated_quality_of_pillow_jpegs(tmp_path: Path, quality: int) -> None:
    path = tmp_path / f"q{quality}.jpg"
    make_photo(1).save(path, quality=quality)
    facts = read_facts(str(path), max_pixels=MAX)
    assert facts.format == "JPEG" and facts.lossless is False and facts.grayscale is False
    assert facts.quality is not None and abs(facts.quality - quality) <= 1


def test_estimate_quality_of_tables() -> None:
    from dedup.facts import STANDARD_LUMINANCE

    assert estimate_quality(STANDARD_LUMINANCE) == 50
    assert estimate_quality([1] * 64) == 100
    assert estimate_quality([255] * 64) == 1


def test_lossless_palette_grayscale_and_converted_files(tmp_path: Path) -> None:
    photo = make_photo(2)
    photo.save(tmp_path / "genuine.png")
    _decoded(photo, 70).save(tmp_path / "from_jpeg.png")  # a lossless file of a JPEG's pixels
    photo.convert("L").save(tmp_path / "gray.png")
    photo.convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "palette.png")
    photo.save(tmp_path / "lossless.webp", lossless=True)
    photo.save(tmp_path / "lossy.webp", quality=80)
    photo.save(tmp_path / "plain.tiff")
    facts = {p.name: read_facts(str(p), max_pixels=MAX) for p in tmp_path.iterdir()}
    assert facts["genuine.png"].lossless is True and facts["genuine.png"].derived is False
    assert facts["from_jpeg.png"].lossless is False and facts["from_jpeg.png"].derived is True
    assert facts["gray.png"].grayscale is True and facts["gray.png"].lossless is True
    assert facts["palette.png"].lossless is False  # 256 colours of a photo: not as good as the original
    assert facts["lossless.webp"].lossless is True and facts["lossy.webp"].lossless is False
    assert facts["plain.tiff"].lossless is True
    assert all(f.quality is None for f in facts.values())  # a quality only for JPEGs
    assert grid_ratio(photo) < GRID_RATIO <= grid_ratio(_decoded(photo, 70))
    w, h = photo.size
    assert grid_ratio(_decoded(photo, 70).crop((3, 5, w - 1, h - 2))) >= GRID_RATIO  # a shifted grid too


def test_edit_marks_and_camera_exif_in_a_lossless_file(tmp_path: Path) -> None:
    photo = make_photo(3)
    edited = Image.Exif()
    edited[0x0131] = "Adobe Photoshop 25.0 (Windows)"
    photo.save(tmp_path / "edited.jpg", quality=90, exif=edited)
    camera = Image.Exif()
    camera[0x010F], camera[0x0110], camera[0x0131] = "Canon", "Canon PowerShot S230", "Firmware 1.00"
    photo.save(tmp_path / "camera.jpg", quality=90, exif=camera)
    photo.save(tmp_path / "camera.png", exif=camera)  # a PNG with a camera's EXIF: converted
    facts = {p.name: read_facts(str(p), max_pixels=MAX) for p in tmp_path.iterdir()}
    assert facts["edited.jpg"].derived is True
    assert facts["camera.jpg"].derived is False  # camera firmware in Software is not an editor
    assert facts["camera.png"].derived is True and facts["camera.png"].lossless is False


def test_unreadable_files_have_unknown_facts(tmp_path: Path) -> None:
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 nope")
    facts = read_facts(str(tmp_path / "bad.jpg"), max_pixels=MAX)
    assert facts.format is None and facts.quality is None and not facts.lossless
    assert read_facts(str(tmp_path / "missing.jpg"), max_pixels=MAX).format is None


def test_a_fifo_swapped_in_for_a_grouped_image_is_not_read(tmp_path: Path) -> None:
    """Facts are read after decoding; a FIFO put in the file's place meanwhile must not block the scan."""
    import os
    import threading

    fifo = tmp_path / "swapped.jpg"
    os.mkfifo(fifo)
    found: list[object] = []
    reader = threading.Thread(target=lambda: found.append(read_facts(str(fifo), max_pixels=MAX)), daemon=True)
    reader.start()
    reader.join(timeout=10)
    if reader.is_alive():  # unblock the reader before failing
        with open(fifo, "wb"):
            pass
        pytest.fail("read_facts blocked on a FIFO")
    assert found == [read_facts(str(tmp_path / "missing.jpg"), max_pixels=MAX)]


@pytest.fixture
def copies(tmp_path: Path) -> Path:
    """One original (JPEG q75) and its degraded copies, with names that sort before the original's."""
    root = tmp_path / "copies"
    root.mkdir()
    photo = make_photo(7, size=(400, 300))
    photo.save(root / "original.jpg", quality=75)
    photo.save(root / "a_q50.jpg", quality=50)  # same pixels, lower quality, sorts first
    photo.resize((200, 150), Image.Resampling.LANCZOS).save(root / "a_half.jpg", quality=95)
    crop_fraction(photo, 0.1).save(root / "a_crop.jpg", quality=95)
    photo.convert("L").save(root / "a_gray.jpg", quality=95)  # same pixels, higher quality, grayscale
    Image.open(root / "original.jpg").convert("RGB").save(root / "a_from_jpeg.png")  # converted, bigger
    return root


def test_best_keeps_the_original_where_resolution_keeps_a_degraded_copy(copies: Path) -> None:
    cfg = {"features.extractor": "phash+thumb+color"}
    best = from_result(find_duplicates([copies], load_config(overrides=cfg)))
    worst = from_result(
        find_duplicates([copies], load_config(overrides={**cfg, "keep.policy": "resolution"}))
    )
    (group,) = best.groups
    names = {Path(m.path).name for m in group.members}
    assert {"original.jpg", "a_q50.jpg", "a_from_jpeg.png", "a_gray.jpg"} <= names
    assert Path(group.keep).name == "original.jpg"
    assert Path(worst.groups[0].keep).name != "original.jpg"  # ties by path: a degraded copy
    by_name = {Path(m.path).name: m for m in group.members}
    assert by_name["original.jpg"].quality == 75 and by_name["a_q50.jpg"].quality == 50
    assert by_name["a_from_jpeg.png"].derived is True and by_name["a_gray.jpg"].grayscale is True
    data = best.to_dict()["groups"][0]["members"][0]
    assert {"format", "quality", "lossless", "derived", "grayscale"} <= set(data)  # additive schema fields
    json.dumps(data)


def test_best_order_of_criteria() -> None:
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class F:
        path: str
        width: int = 100
        height: int = 100
        size: int = 1000
        mtime: float = 0.0
        quality: int | None = None
        lossless: bool | None = None
        derived: bool | None = None
        grayscale: bool | None = None

    def kept(*images: F, reference: tuple[str, ...] = ()) -> str:
        return images[choose_keep(images, "best", reference)].path

    assert kept(F("/a", width=99), F("/b")) == "/b"  # most pixels first
    assert kept(F("/a", grayscale=True, quality=95), F("/b", quality=60)) == "/b"  # colour over gray
    assert kept(F("/a", quality=60, size=9000), F("/b", quality=80)) == "/b"  # quality over size
    assert kept(F("/a", quality=100), F("/b", lossless=True, size=10)) == "/b"  # lossless over any JPEG
    assert kept(F("/a", quality=None, size=9000), F("/b", quality=20)) == "/b"  # unknown quality last
    assert kept(F("/a", size=10), F("/b", size=20)) == "/b"  # then the larger file
    assert kept(F("/a", derived=True), F("/b")) == "/b"  # then not a derived copy
    assert kept(F("/b"), F("/a")) == "/a"  # ties by path
    assert kept(F("/x/a", width=1000), F("/ref/b"), reference=("/ref",)) == "/ref/b"  # reference first


@pytest.mark.realdata
def test_imagededup_alpha_png_is_no_longer_kept_over_the_original() -> None:
    root = shared_data() / "imagededup-testdata" / "tests" / "data"
    if not root.is_dir():
        pytest.skip(f"{root} is not there")
    cfg = {"features.extractor": "phash+thumb+color"}
    best = from_result(find_duplicates([root], load_config(overrides=cfg)))
    old = from_result(find_duplicates([root], load_config(overrides={**cfg, "keep.policy": "resolution"})))

    def keep_of(report, name: str) -> str:
        group = next(g for g in report.groups if any(Path(m.path).name == name for m in g.members))
        return str(Path(group.keep).relative_to(root))

    assert keep_of(old, "alpha_channel_image.png") == "alpha_channel_image.png"  # the complaint
    assert keep_of(best, "alpha_channel_image.png") == "base_images/ukbench00120.jpg"
    alpha = next(m for g in best.groups for m in g.members if m.path.endswith("alpha_channel_image.png"))
    assert alpha.derived is True and alpha.lossless is False  # camera EXIF in a PNG: converted


def test_a_jpeg_saved_again_at_a_higher_quality_is_recompressed(tmp_path: Path) -> None:
    from PIL import ImageOps

    photo = make_photo(9, size=(400, 300))
    photo.save(tmp_path / "genuine_q95.jpg", quality=95)
    photo.save(tmp_path / "original_q60.jpg", quality=60)
    once = Image.open(tmp_path / "original_q60.jpg").convert("RGB")
    once.save(tmp_path / "again_q95.jpg", quality=95)  # the same pixels, saved again "better"
    ImageOps.mirror(once).save(tmp_path / "flipped_q92.jpg", quality=92)  # an edit saved again
    facts = {p.name: read_facts(str(p), max_pixels=MAX) for p in tmp_path.iterdir()}
    assert facts["genuine_q95.jpg"].recompressed is False and facts["original_q60.jpg"].recompressed is False
    assert facts["again_q95.jpg"].recompressed is True and facts["again_q95.jpg"].derived is True
    assert facts["again_q95.jpg"].quality == 95  # the nominal quality is still reported
    assert facts["flipped_q92.jpg"].recompressed is True

    class Member:
        def __init__(self, name: str) -> None:
            f = facts[name]
            self.path, self.size, self.mtime, self.width, self.height = name, 0, 0.0, 400, 300
            self.quality, self.lossless, self.recompressed = f.quality, f.lossless, f.recompressed
            self.derived, self.grayscale = f.derived, f.grayscale

    group = [Member(n) for n in ("again_q95.jpg", "flipped_q92.jpg", "original_q60.jpg")]
    assert group[choose_keep(group, "best")].path == "original_q60.jpg"

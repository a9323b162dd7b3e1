"""Tests of dedup.images: discover (content sniffing, symlinks, hidden, exclude) and open_image (decoding)."""

from __future__ import annotations

import csv
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from dedup.config import DiscoverConfig
from dedup.errors import ImageError, InputError
from dedup.images import ImageFile, Skipped, discover, open_image

from helpers import shared_data
from imagegen import animated_gif, jpeg_bytes, make_photo, save_with_orientation

BIG = 10**9  # max_pixels that never triggers


def paths(found: list[ImageFile]) -> list[str]:
    return [f.path for f in found]


def decode(path: Path | str, **kwargs: Any) -> tuple[Image.Image, int, int]:
    kwargs.setdefault("max_pixels", BIG)
    kwargs.setdefault("draft_size", None)
    return open_image(str(path), **kwargs)


def pixel(image: Image.Image, xy: tuple[int, int]) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)[xy[1], xy[0]]


# ------------------------------------------------------------------------------------- discover: dataset


def test_dataset_discover_matches_ground_truth(dataset: dict[str, Any]) -> None:
    images, skipped = discover([dataset["root"]], DiscoverConfig())
    assert paths(images) == dataset["images"]
    expected_skips = {p: r for p, r in dataset["skipped"].items() if dataset["skipped_at"][p] == "discover"}
    assert {s.path: s.reason for s in skipped} == expected_skips
    reported = set(paths(images)) | {s.path for s in skipped}
    assert not reported & set(dataset["ignored"])


def test_dataset_every_decodable_image_decodes(dataset: dict[str, Any]) -> None:
    for path in dataset["decodable"]:
        image, width, height = decode(path)
        assert image.mode == "RGB" and width > 0 and height > 0
    with pytest.raises(ImageError, match="^truncated image$"):
        decode(dataset["special"]["truncated"])


def test_discover_records_size_and_mtime(dataset: dict[str, Any]) -> None:
    images, _ = discover([dataset["root"]], DiscoverConfig())
    for f in images:
        st = os.stat(f.path)
        assert (f.size, f.mtime) == (st.st_size, st.st_mtime)
        assert os.path.isabs(f.path)


def test_content_sniffing(tmp_path: Path) -> None:
    photo = make_photo(1, (64, 48))
    photo.save(tmp_path / "png_named.jpg", "PNG")
    photo.save(tmp_path / "jpeg_named.svg", "JPEG")
    photo.save(tmp_path / "jpeg_named.bmp", "JPEG")
    photo.save(tmp_path / "no_extension", "JPEG")
    (tmp_path / "text.jpg").write_text("not an image")
    (tmp_path / "README.txt").write_text("hello")
    (tmp_path / "table.csv").write_text("a,b\n1,2\n")
    (tmp_path / "garbage.png").write_bytes(os.urandom(2000))
    images, skipped = discover([tmp_path], DiscoverConfig())
    assert paths(images) == [
        str(tmp_path / n) for n in ("jpeg_named.bmp", "jpeg_named.svg", "no_extension", "png_named.jpg")
    ]
    assert skipped == [
        Skipped(str(tmp_path / n), "not an image (unrecognised content)") for n in ("garbage.png", "text.jpg")
    ]


def test_explicit_file_paths(tmp_path: Path) -> None:
    make_photo(2, (40, 30)).save(tmp_path / "photo.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    images, skipped = discover([tmp_path / "photo.jpg", tmp_path / "notes.txt"], DiscoverConfig())
    assert paths(images) == [str(tmp_path / "photo.jpg")]
    assert skipped == [Skipped(str(tmp_path / "notes.txt"), "not an image (unrecognised content)")]


def test_relative_paths_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sub").mkdir()
    make_photo(3, (40, 30)).save(tmp_path / "sub" / "x.png")
    monkeypatch.chdir(tmp_path)
    images, _ = discover(["sub"], DiscoverConfig())
    assert paths(images) == [str(tmp_path / "sub" / "x.png")]


def test_zero_byte_file(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "empty.dat").write_bytes(b"")
    images, skipped = discover([tmp_path], DiscoverConfig())
    assert images == [] and skipped == [Skipped(str(tmp_path / "empty.jpg"), "empty file")]
    with pytest.raises(ImageError, match="^empty file$"):
        decode(tmp_path / "empty.jpg")


def test_missing_path_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "ok").mkdir()
    with pytest.raises(InputError, match="path does not exist: .*nope"):
        discover([tmp_path / "ok", tmp_path / "nope"], DiscoverConfig())


def test_progress_is_reported(dataset: dict[str, Any]) -> None:
    calls: list[tuple[str, int, int | None]] = []
    discover([dataset["root"]], DiscoverConfig(), progress=lambda *a: calls.append(a))
    assert calls and all(phase == "discover" and total is None for phase, _, total in calls)
    assert calls[-1][1] >= len(dataset["images"])


# ------------------------------------------------------------------- discover: symlinks, hidden, exclude


def test_symlink_loop_terminates_and_no_file_twice(dataset: dict[str, Any]) -> None:
    root = Path(dataset["root"])
    images, _ = discover([root], DiscoverConfig(follow_symlinks=True))
    found = paths(images)
    identities = [(os.stat(p).st_dev, os.stat(p).st_ino) for p in found]
    assert len(set(identities)) == len(identities) == len(set(found))
    for link, target in dataset["aliases"].items():
        assert target in found and link not in found
    assert not any("/loop/" in p for p in found)


def test_same_folder_twice_and_nested_paths(dataset: dict[str, Any]) -> None:
    root = Path(dataset["root"])
    once = discover([root], DiscoverConfig())
    repeated: list[str | Path] = [root / "photos", root, str(root) + "/", root / "photos" / "2024"]
    assert discover(repeated, DiscoverConfig()) == once
    via_loop = discover([root / "shortcuts" / "loop" / "photos"], DiscoverConfig())
    assert all(p.startswith(str(root / "shortcuts" / "loop" / "photos")) for p in paths(via_loop[0]))


def test_symlinked_folder_followed_only_when_asked(tmp_path: Path) -> None:
    outside, scanned = tmp_path / "outside", tmp_path / "scanned"
    outside.mkdir()
    scanned.mkdir()
    make_photo(4, (40, 30)).save(outside / "x.jpg")
    (scanned / "linked").symlink_to(outside, target_is_directory=True)
    (scanned / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    (scanned / "gone_folder").symlink_to(tmp_path / "missing_folder")
    images, skipped = discover([scanned], DiscoverConfig(follow_symlinks=True))
    assert paths(images) == [str(scanned / "linked" / "x.jpg")]  # the path the user sees, not resolved
    assert skipped == [Skipped(str(scanned / "gone.jpg"), "broken symlink")]
    assert discover([scanned], DiscoverConfig(follow_symlinks=False)) == ([], [])


def test_hidden_files_and_folders(dataset: dict[str, Any]) -> None:
    root = dataset["root"]
    default, _ = discover([root], DiscoverConfig())
    with_hidden, _ = discover([root], DiscoverConfig(include_hidden=True))
    assert set(paths(with_hidden)) - set(paths(default)) == set(dataset["hidden"])
    hidden_root = Path(root) / ".private"  # a hidden folder given explicitly is scanned
    assert paths(discover([hidden_root], DiscoverConfig())[0]) == [str(hidden_root / "b_copy.jpg")]


def test_no_recursive(dataset: dict[str, Any]) -> None:
    photos = Path(dataset["root"]) / "photos"
    images, _ = discover([photos], DiscoverConfig(recursive=False))
    expected = sorted(str(p) for p in photos.glob("*.jpg") if not p.name.startswith("."))
    assert paths(images) == expected and len(expected) == 12


def test_exclude_folder_compared_resolved(dataset: dict[str, Any]) -> None:
    root = Path(dataset["root"])
    excluded = root / "photos" / "2024"
    result = discover([root], DiscoverConfig(), exclude=[excluded])
    found = paths(result[0])
    assert found and not any(p.startswith(str(excluded) + os.sep) for p in found)
    assert len(found) == len(dataset["images"]) - 12  # the 6 files of group c and the 6 of group d
    via_symlink = root / "shortcuts" / "loop" / "photos" / "2024"  # the same folder under another name
    assert discover([root], DiscoverConfig(), exclude=[via_symlink]) == result
    missing = root / "does-not-exist"
    assert discover([root], DiscoverConfig(), exclude=[missing]) == discover([root], DiscoverConfig())


def test_fifo_is_never_opened(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.jpg")
    result: list[Any] = []
    worker = threading.Thread(
        target=lambda: result.append(discover([tmp_path], DiscoverConfig())), daemon=True
    )
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "discover blocked opening a FIFO"
    assert result == [([], [Skipped(str(tmp_path / "pipe.jpg"), "not a regular file (FIFO)")])]


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="running as root: chmod 000 does not stop root from reading files",
)
def test_permission_denied_file_and_folder(tmp_path: Path) -> None:
    make_photo(5, (40, 30)).save(tmp_path / "locked.jpg")
    (tmp_path / "locked_dir").mkdir()
    make_photo(6, (40, 30)).save(tmp_path / "locked_dir" / "inner.jpg")
    os.chmod(tmp_path / "locked.jpg", 0)
    os.chmod(tmp_path / "locked_dir", 0)
    try:
        images, skipped = discover([tmp_path], DiscoverConfig())
    finally:
        os.chmod(tmp_path / "locked.jpg", 0o644)
        os.chmod(tmp_path / "locked_dir", 0o755)
    assert images == []
    assert skipped == [
        Skipped(str(tmp_path / "locked.jpg"), "permission denied"),
        Skipped(str(tmp_path / "locked_dir"), "permission denied"),
    ]


def test_permission_denied_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same as above through a fake PermissionError, so it also runs as root."""
    make_photo(5, (40, 30)).save(tmp_path / "locked.jpg")
    real_open = os.open

    def deny(path: Any, *args: Any, **kwargs: Any) -> Any:
        if str(path).endswith("locked.jpg"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    assert discover([tmp_path], DiscoverConfig()) == (
        [],
        [Skipped(str(tmp_path / "locked.jpg"), "permission denied")],
    )
    with pytest.raises(ImageError, match="^permission denied$"):
        decode(tmp_path / "locked.jpg")


# ---------------------------------------------------------------------------------------- open_image


def test_cmyk_jpeg_colours(tmp_path: Path) -> None:
    colour = (200, 60, 30)
    Image.new("RGB", (64, 48), colour).convert("CMYK").save(tmp_path / "cmyk.jpg", "JPEG", quality=95)
    with Image.open(tmp_path / "cmyk.jpg") as raw:
        assert raw.mode == "CMYK"
    image, _, _ = decode(tmp_path / "cmyk.jpg")
    assert image.mode == "RGB"
    assert np.abs(np.asarray(image, dtype=np.int16).mean(axis=(0, 1)) - colour).max() < 8


def corner_marked(size: tuple[int, int] = (80, 60)) -> Image.Image:
    """Grey image with a red top-left and a blue bottom-right block."""
    image = Image.new("RGB", size, (128, 128, 128))
    image.paste((255, 0, 0), (0, 0, 20, 15))
    image.paste((0, 0, 255), (size[0] - 20, size[1] - 15, size[0], size[1]))
    return image


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied(tmp_path: Path, orientation: int) -> None:
    display = corner_marked()
    path = tmp_path / f"o{orientation}.jpg"
    save_with_orientation(display, path, orientation)
    with Image.open(path) as raw:  # stored pixels are really rotated for 5-8
        assert raw.size == ((60, 80) if orientation >= 5 else (80, 60))
    image, width, height = decode(path)
    assert (width, height) == image.size == (80, 60)
    assert np.abs(pixel(image, (5, 5)) - (255, 0, 0)).max() < 40
    assert np.abs(pixel(image, (75, 55)) - (0, 0, 255)).max() < 40


def test_dataset_exif_rotated_matches_original(dataset: dict[str, Any]) -> None:
    rotated, width, height = decode(dataset["special"]["exif_rotated"])
    original, *_ = decode(
        next(p for p, t in dataset["transforms"].items() if t == "original" and p.endswith("/b.jpg"))
    )
    assert (width, height) == rotated.size == original.size == (320, 240)
    diff = np.abs(np.asarray(rotated, dtype=np.int16) - np.asarray(original, dtype=np.int16)).mean()
    assert diff < 6


def make_mode_image(mode: str, path: Path) -> None:
    """Write a 32x32 image in ``mode`` whose expected RGB decode is given in MODE_CASES."""
    if mode == "I;16":
        Image.fromarray(np.full((32, 32), 32768, dtype=np.uint16)).save(path)
    elif mode == "I":
        Image.fromarray(np.full((32, 32), 32768, dtype=np.int32)).save(path)
    elif mode == "F":
        Image.fromarray(np.full((32, 32), 0.5, dtype=np.float32)).save(path)
    elif mode == "1":
        Image.new("1", (32, 32), 1).save(path)
    elif mode == "L":
        Image.new("L", (32, 32), 100).save(path)
    elif mode == "LA":
        Image.new("LA", (32, 32), (0, 0)).save(path)  # fully transparent black -> white
    elif mode == "RGBA":
        Image.new("RGBA", (32, 32), (255, 0, 0, 128)).save(path)  # half red over white
    else:
        raise AssertionError(mode)
    with Image.open(path) as check:
        assert check.mode == mode, f"fixture for {mode} came back as {check.mode}"


MODE_CASES = {
    "I;16": ("gray16.png", (128, 128, 128)),
    "I": ("int32.tif", (128, 128, 128)),
    "F": ("float.tif", (128, 128, 128)),
    "1": ("bilevel.png", (255, 255, 255)),
    "L": ("gray.png", (100, 100, 100)),
    "LA": ("gray_alpha.png", (255, 255, 255)),
    "RGBA": ("rgba.png", (255, 127, 127)),
}


@pytest.mark.parametrize("mode", sorted(MODE_CASES))
def test_modes_convert_to_rgb(tmp_path: Path, mode: str) -> None:
    name, expected = MODE_CASES[mode]
    make_mode_image(mode, tmp_path / name)
    image, width, height = decode(tmp_path / name)
    assert image.mode == "RGB" and (width, height) == (32, 32)
    assert np.abs(np.asarray(image, dtype=np.int16) - expected).max() <= 1


def test_16bit_gradient_keeps_its_range(dataset: dict[str, Any], tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (8, 1))
    Image.fromarray(ramp).save(tmp_path / "ramp16.png")
    row = np.asarray(decode(tmp_path / "ramp16.png")[0])[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255 and np.all(np.diff(row) >= 0) and abs(row[128] - 128) <= 1
    gray, *_ = decode(dataset["special"]["gray16"])  # the dataset's 16-bit PNG is a real photo, not white
    assert 40 < np.asarray(gray).mean() < 215


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animated_first_frame(tmp_path: Path, fmt: str) -> None:
    colours = [(220, 20, 20), (20, 220, 20), (20, 20, 220)]
    frames = [Image.new("RGB", (40, 30), c) for c in colours]
    path = tmp_path / f"anim.{fmt.lower()}"
    if fmt == "GIF":
        animated_gif(path, frames)
    else:
        frames[0].save(path, fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(path) as raw:
        assert getattr(raw, "n_frames", 1) == 3
    image, *_ = decode(path)
    assert np.abs(np.asarray(image, dtype=np.int16).mean(axis=(0, 1)) - colours[0]).max() < 12


def test_dataset_animated_gif_first_frame(dataset: dict[str, Any]) -> None:
    image = np.asarray(decode(dataset["special"]["animated_gif"])[0], dtype=np.int16)
    errors = [
        np.abs(image - np.asarray(make_photo(s, (160, 120)), dtype=np.int16)).mean() for s in (606, 707, 808)
    ]
    assert errors[0] < min(errors[1:]) / 2


def test_palette_with_transparency(tmp_path: Path) -> None:
    image = Image.new("P", (20, 10), 0)
    image.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    image.paste(1, (10, 0, 20, 10))
    image.save(tmp_path / "pal.png", transparency=0)
    with Image.open(tmp_path / "pal.png") as raw:
        assert raw.mode == "P" and "transparency" in raw.info
    rgb, *_ = decode(tmp_path / "pal.png")
    assert tuple(pixel(rgb, (2, 5))) == (255, 255, 255)  # transparent black -> white, not black
    assert tuple(pixel(rgb, (15, 5))) == (200, 0, 0)


def test_decompression_bomb_limit(dataset: dict[str, Any]) -> None:
    path = dataset["groups"]["a"][0]  # 320 x 240
    with pytest.raises(ImageError, match=r"^decompression bomb \(76800 pixels > limit 1000\)$"):
        decode(path, max_pixels=1000)
    assert decode(path, max_pixels=76800)[1:] == (320, 240)


def test_pillow_bomb_error_is_a_skip_not_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_photo(7, (100, 100)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow itself refuses > 2000 pixels at open
    images, skipped = discover([tmp_path], DiscoverConfig())
    assert paths(images) == [str(tmp_path / "big.png")] and skipped == []  # still an image candidate
    with pytest.raises(ImageError, match=r"^decompression bomb \(10000 pixels > limit 2000\)$"):
        decode(tmp_path / "big.png")


def test_draft_decodes_smaller_but_reports_full_size(tmp_path: Path) -> None:
    photo = make_photo(8, (1600, 1200))
    photo.save(tmp_path / "big.jpg", "JPEG", quality=90)
    save_with_orientation(photo, tmp_path / "big_rot.jpg", orientation=6)
    image, width, height = decode(tmp_path / "big.jpg", draft_size=224)
    assert (width, height) == (1600, 1200)
    assert image.width < 1600 and min(image.size) >= 224
    assert image.width * 1200 == image.height * 1600  # aspect kept
    with Image.open(tmp_path / "big_rot.jpg") as raw:
        assert raw.size == (1200, 1600)  # stored portrait, displayed landscape (orientation 6)
    rotated, width, height = decode(tmp_path / "big_rot.jpg", draft_size=224)
    assert (width, height) == (1600, 1200)
    assert rotated.size == image.size
    assert decode(tmp_path / "big.jpg")[0].size == (1600, 1200)  # no draft without draft_size


def test_draft_never_goes_below_draft_size(tmp_path: Path) -> None:
    make_photo(9, (500, 300)).save(tmp_path / "x.jpg", "JPEG")
    image, *_ = decode(tmp_path / "x.jpg", draft_size=224)
    assert image.size == (500, 300)  # halving would make the short side 150 < 224


def test_undecodable_files_raise_image_error(tmp_path: Path) -> None:
    (tmp_path / "text.jpg").write_text("not an image")
    data = jpeg_bytes(make_photo(10, (200, 150)))
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageError, match="^cannot decode: ") as info:
        decode(tmp_path / "text.jpg")
    assert isinstance(info.value.__cause__, OSError)
    with pytest.raises(ImageError, match="^truncated image$"):
        decode(tmp_path / "trunc.jpg")
    with pytest.raises(ImageError, match="^cannot read: "):
        decode(tmp_path / "missing.jpg")


def test_open_image_is_thread_safe(dataset: dict[str, Any]) -> None:
    items = dataset["decodable"] * 3

    def run(path: str) -> tuple[bytes, int, int]:
        image, width, height = open_image(path, max_pixels=100_000, draft_size=64)
        return image.tobytes(), width, height

    sequential = [run(p) for p in items]
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(run, items)) == sequential


# ------------------------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_imagededup_testdata_decodes_except_corrupt() -> None:
    base = shared_data() / "imagededup-testdata"
    if not (base / "tests" / "data").is_dir() or not (base / "ground_truth.csv").is_file():
        pytest.skip(f"shared test data not found under {base} (set DEDUP_SHARED_DATA)")
    with open(base / "ground_truth.csv", newline="") as table:
        rows = list(csv.DictReader(table))
    corrupt = {os.path.abspath(base / r["path"]) for r in rows if r["group_id"] == "CORRUPT"}
    good = {os.path.abspath(base / r["path"]) for r in rows if r["group_id"] != "CORRUPT"}
    assert len(corrupt) == 2

    images, skipped = discover([base / "tests" / "data"], DiscoverConfig())
    decode_skips = []
    for f in images:
        try:
            image, width, height = open_image(f.path, max_pixels=BIG, draft_size=224)
        except ImageError:
            decode_skips.append(f.path)
            continue
        assert image.mode == "RGB" and min(image.size) >= min(224, width, height)
    assert {s.path for s in skipped} | set(decode_skips) == corrupt
    assert set(paths(images)) - set(decode_skips) == good


# ------------------------------------------------------------------- hostile and unlucky input (issue 16)


def test_a_fifo_given_as_the_scan_path_and_svg_files_are_skipped_with_a_reason(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "drawing.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    (tmp_path / "empty.svg").write_bytes(b"")
    images, skipped = discover([tmp_path / "pipe", tmp_path], DiscoverConfig())
    assert images == []
    assert skipped == [
        Skipped(
            str(tmp_path / "drawing.svg"),
            "vector image (SVG): not supported; convert it to PNG to compare it",
        ),
        Skipped(str(tmp_path / "empty.svg"), "empty file"),
        Skipped(str(tmp_path / "pipe"), "not a regular file (FIFO)"),
    ]


def _in_thread(fn: Any, timeout: float = 20) -> Any:
    """``fn()`` in a daemon thread; fails the test (instead of hanging it) if it does not return in time."""
    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(_outcome(fn)), daemon=True)
    worker.start()
    worker.join(timeout)
    assert not worker.is_alive(), "blocked reading a FIFO or a device"
    return result[0]


def _outcome(fn: Any) -> Any:
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - returned to the test, which checks it
        return e


@pytest.mark.parametrize("swap", ["fifo", "dev-zero"])
def test_a_file_swapped_for_a_fifo_or_dev_zero_is_never_read(tmp_path: Path, swap: str) -> None:
    """Issue 16, 6: every open of a scanned file checks on the open descriptor that it is a regular file."""
    from dedup.cache import content_digest

    path = tmp_path / "photo.jpg"
    make_photo(1, (40, 30)).save(path)
    path.unlink()
    if swap == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    kind = "FIFO" if swap == "fifo" else "character device"
    error = _in_thread(lambda: decode(path))
    assert isinstance(error, ImageError) and str(error) == f"not a regular file ({kind})"
    error = _in_thread(lambda: content_digest(str(path)))
    assert isinstance(error, OSError) and "not a regular file" in str(error)


def test_a_scan_survives_files_swapped_after_discovery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16, 6, through the whole pipeline: an injected hook replaces files right after discovery by a
    FIFO (same size as another file, so the identical-file pre-pass digests it) and by a link to /dev/zero."""
    from dedup import extract, find_duplicates, load_config

    root = tmp_path / "photos"
    root.mkdir()
    for i in range(4):
        make_photo(i % 2, (80, 60)).save(root / f"p{i}.png")  # p0 == p2, p1 == p3 byte for byte
    real_discover = extract.discover

    def discover_then_swap(*args: Any, **kwargs: Any) -> Any:
        found = real_discover(*args, **kwargs)
        (root / "p2.png").unlink()
        os.mkfifo(root / "p2.png")
        (root / "p3.png").unlink()
        (root / "p3.png").symlink_to("/dev/zero")
        return found

    monkeypatch.setattr(extract, "discover", discover_then_swap)
    config = load_config(overrides={"features.extractor": "phash+thumb+color"})
    result = _in_thread(lambda: find_duplicates([root], config), timeout=60)
    assert not isinstance(result, BaseException), result
    assert {os.path.basename(s.path): s.reason for s in result.skipped} == {
        "p2.png": "not a regular file (FIFO)",
        "p3.png": "not a regular file (character device)",
    }
    assert sorted(os.path.basename(r.path) for r in result.images) == ["p0.png", "p1.png"]


def test_a_huge_16_bit_image_decodes_in_bounded_memory(tmp_path: Path) -> None:
    """Issue 16, 11: a 6000 x 6000 16-bit PNG (72 MB of pixels) used to need ~1.6 GB (float64 copies);
    now the full-size buffer once plus small bands, and it is shrunk before anything else."""
    import subprocess
    import sys

    path = tmp_path / "big16.png"
    ramp = np.linspace(0, 65535, 6000, dtype=np.float32)
    Image.fromarray(((ramp[:, None] + ramp[None, :]) / 2).astype(np.uint16)).save(path, compress_level=1)
    code = (
        "import resource, sys\n"
        "from dedup.images import open_image\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"im, w, h = open_image({str(path)!r}, max_pixels=10**9, draft_size=64)\n"
        "grow = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024\n"
        "print(im.size[0], im.size[1], w, h, round(grow))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    width, height, full_w, full_h, grown_mb = map(int, out.stdout.split())
    assert (full_w, full_h) == (6000, 6000) and width * height <= 16_777_216 and min(width, height) >= 64
    assert grown_mb < 250, f"decoding grew the process by {grown_mb} MB"


def test_images_above_reduce_above_are_shrunk_by_a_whole_factor_and_others_untouched(tmp_path: Path) -> None:
    photo = make_photo(3, (400, 300))
    photo.save(tmp_path / "p.png")
    full, w, h = decode(tmp_path / "p.png")
    same, _, _ = decode(tmp_path / "p.png", reduce_above=400 * 300)
    assert full.size == (400, 300) and np.array_equal(np.asarray(full), np.asarray(same))
    small, w2, h2 = decode(tmp_path / "p.png", reduce_above=10_000)
    assert small.size == (100, 75) and (w2, h2) == (w, h) == (400, 300)  # factor 4: 7,500 pixels
    floor, _, _ = decode(tmp_path / "p.png", reduce_above=10_000, draft_size=150)
    assert floor.size == (200, 150)  # never below what the caller needs
    for mode in ("I;16", "P", "1", "RGBA"):
        image = Image.fromarray((np.arange(400 * 300) % 250).astype(np.uint16).reshape(300, 400))
        image = image if mode == "I;16" else photo.convert(mode)
        image.save(tmp_path / f"m{mode.replace(';', '')}.png")
        out, _, _ = decode(tmp_path / f"m{mode.replace(';', '')}.png", reduce_above=10_000)
        assert out.mode == "RGB" and out.size == (100, 75), mode


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_shrunk_image_keeps_its_exif_orientation(tmp_path: Path, orientation: int) -> None:
    photo = make_photo(4, (400, 300))
    save_with_orientation(photo, tmp_path / "o.jpg", orientation)
    upright, w, h = decode(tmp_path / "o.jpg")
    small, w2, h2 = decode(tmp_path / "o.jpg", reduce_above=10_000)
    assert (w2, h2) == (w, h) and small.size == (upright.size[0] // 4, upright.size[1] // 4)
    diff = np.abs(np.asarray(upright.resize(small.size), dtype=np.int16) - np.asarray(small, dtype=np.int16))
    assert diff.mean() < 12

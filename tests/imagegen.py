"""Deterministic test images: photo-like pictures, their near-duplicate variants and nasty files.

Used by many test files (``from imagegen import make_photo, write_dataset``). Everything depends only on
the seeds, so every run writes the same pixels.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

# Transforms of an original that the default phash configuration is expected to match. A horizontal flip
# changes a perceptual hash completely, but features.mirror (on by default) also compares mirror images.
# Even a 5% crop shifts the DCT enough (40-50 of 256 bits) to fall below the default threshold (38 bits).
PHASH_CATCHES = frozenset(
    {
        "original",
        "jpeg_q25",
        "half_size",
        "hflip",
        "brightness_115",
        "cmyk_jpeg",
        "exif_rotated",
        "gray16_png",
        "png_named_jpg",
    }
)
PHASH_MISSES = frozenset({"crop_5pct"})

# Orientation tag value -> the transpose that turns the displayed image into the stored pixels
# (the inverse of what a viewer applies; ImageOps.exif_transpose applies the forward one).
_STORE_FOR_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def make_photo(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A distinct, textured, photo-like RGB image for each seed.

    Smooth random gradients and low-frequency waves (which dominate a perceptual hash, so different seeds
    hash far apart) under random filled shapes, plus mild pixel noise for texture.

    Args:
        seed: any int; equal seeds give identical pixels.
        size: (width, height) in pixels.
    """
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    x /= max(width - 1, 1)
    y /= max(height - 1, 1)
    channels = []
    for _ in range(3):
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.cos(angle) * x + np.sin(angle) * y
        fx, fy, phase = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 2 * np.pi)
        wave = np.sin(2 * np.pi * (fx * x + fy * y) + phase)
        channels.append(rng.uniform(40, 200) + 60 * ramp + 45 * wave)
    image = Image.fromarray(np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(6, 11))):
        box = _random_box(rng, width, height)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse(box, fill=colour)
        else:
            draw.rectangle(box, fill=colour)
    noisy = np.asarray(image, dtype=np.int16) + rng.integers(-12, 13, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def _random_box(rng: np.random.Generator, width: int, height: int) -> tuple[int, int, int, int]:
    """A box covering 10-45 % of each side, anywhere in the frame (pixels, inclusive corners)."""
    w = int(rng.uniform(0.10, 0.45) * width)
    h = int(rng.uniform(0.10, 0.45) * height)
    left = int(rng.integers(0, width - w))
    top = int(rng.integers(0, height - h))
    return left, top, left + w, top + h


def save_with_orientation(display: Image.Image, path: Path, orientation: int, quality: int = 92) -> None:
    """Write a JPEG whose stored pixels are rotated/flipped so that a viewer honouring the EXIF
    ``orientation`` tag (1-8) shows ``display``."""
    stored = display.transpose(_STORE_FOR_ORIENTATION[orientation]) if orientation != 1 else display
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, "JPEG", quality=quality, exif=exif)


def gray16(image: Image.Image) -> Image.Image:
    """16-bit grayscale ("I;16") version of an image: 8-bit luma L scaled by 257 (0-255 -> 0-65535)."""
    luma = np.asarray(ImageOps.grayscale(image), dtype=np.uint16) * 257
    return Image.fromarray(luma)


def jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    """The image encoded as JPEG."""
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def crop_fraction(image: Image.Image, fraction: float) -> Image.Image:
    """Centre crop removing ``fraction`` of the width and of the height (half on each side)."""
    width, height = image.size
    dx, dy = round(width * fraction / 2), round(height * fraction / 2)
    return image.crop((dx, dy, width - dx, height - dy))


def palette_with_transparency(seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """A "P" image (logo-like shapes) whose palette index 0 is transparent (``info["transparency"]``)."""
    rng = np.random.default_rng(seed)
    image = Image.new("P", size, 0)
    palette = [0, 0, 0] + [int(v) for v in rng.integers(0, 256, 3 * 15)]
    image.putpalette(palette)
    draw = ImageDraw.Draw(image)
    for index in range(1, 9):
        draw.ellipse(_random_box(rng, *size), fill=index)
    image.info["transparency"] = 0
    return image


def animated_gif(path: Path, frames: list[Image.Image]) -> None:
    """An animated GIF (looping, 100 ms per frame) of ``frames``, each quantised to its own palette."""
    frames[0].save(path, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _write_group(root: Path, name: str, seed: int, folder: str) -> dict[str, str]:
    """An original (JPEG q95) plus its standard variants; returns relative path -> transform."""
    photo = make_photo(seed)
    d = root / folder
    d.mkdir(parents=True, exist_ok=True)
    files = {
        f"{folder}/{name}.jpg": ("original", lambda p: photo.save(p, "JPEG", quality=95)),
        f"{folder}/{name}_q25.jpg": ("jpeg_q25", lambda p: photo.save(p, "JPEG", quality=25)),
        f"{folder}/{name}_half.jpg": (
            "half_size",
            lambda p: photo.resize((photo.width // 2, photo.height // 2), Image.Resampling.LANCZOS).save(
                p, "JPEG", quality=90
            ),
        ),
        f"{folder}/{name}_crop.jpg": (
            "crop_5pct",
            lambda p: crop_fraction(photo, 0.05).save(p, "JPEG", quality=90),
        ),
        f"{folder}/{name}_flip.jpg": ("hflip", lambda p: ImageOps.mirror(photo).save(p, "JPEG", quality=90)),
        f"{folder}/{name}_bright.jpg": (
            "brightness_115",
            lambda p: ImageEnhance.Brightness(photo).enhance(1.15).save(p, "JPEG", quality=90),
        ),
    }
    for rel, (_, write) in files.items():
        write(root / rel)
    return {rel: transform for rel, (transform, _) in files.items()}


def write_dataset(root: Path) -> dict[str, Any]:
    """Write a realistic, messy image folder under ``root`` and return its ground truth.

    Layout (all images 320x240 unless said otherwise)::

        photos/a*.jpg              group a: original + jpeg_q25, half_size, crop_5pct, hflip, brightness_115
        photos/b*.jpg              group b: the same variants, + formats/b_rotated.jpg (EXIF orientation 6)
        photos/2024/trip/c*.jpg    group c (nested folder), + formats/c_cmyk.jpg, formats/c_really_png.jpg
        photos/2024/d*.jpg         group d, + formats/d_gray16.png (16-bit grayscale PNG)
        singles/                   unrelated images (JPEG, PNG, WebP), an animated GIF (frames: seeds 606,
                                   707, 808 at 160x120), a palette PNG with a transparent background
        bad/                       truncated JPEG, text named .jpg, zero-byte .jpg
        photos/.a_copy.jpg, .private/b_copy.jpg   hidden copies (ignored unless include_hidden)
        shortcuts/a_link.jpg -> ../photos/a.jpg   symlink to a file (reported once, as photos/a.jpg)
        shortcuts/loop -> ..                      symlink loop to the root
        README.txt, notes.csv      non-image files (silently ignored)

    Returns:
        A dict (all paths absolute strings under ``root``, as ``discover`` reports them)::

            "root": str(root)
            "groups": {"a": [paths], ...}      true near-duplicate groups, original first (hflip included)
            "phash_groups": {"a": [...]}        the members a perceptual hash is expected to find
                                                 (transforms in PHASH_CATCHES; the crop left out)
            "transforms": {path: transform}     for every group member ("original", "jpeg_q25", ...)
            "phash_catches": sorted transform names expected to be caught; "phash_misses": ["hflip"]
            "singletons": [paths]              decodable images that duplicate nothing
            "images": [paths]                  everything discover returns by default (sorted)
            "decodable": [paths]               images that open_image decodes (images minus decode skips)
            "skipped": {path: reason}          discover + decode skips with the exact reason string
            "skipped_at": {path: "discover" | "decode"}
            "ignored": [paths]                 files that must appear nowhere (non-images, hidden files,
                                                 the symlink alias, the loop)
            "hidden": {path: group}            hidden copies and the group they would join with include_hidden
            "aliases": {symlink: target}       the symlink and the path reported instead
            "special": {kind: path}            one file per decode case: "cmyk", "exif_rotated", "gray16",
                                                 "animated_gif", "palette_transparent", "png_named_jpg",
                                                 "truncated", "text_named_jpg", "empty"
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    transforms: dict[str, str] = {}
    groups: dict[str, list[str]] = {}
    for name, seed, folder in (
        ("a", 11, "photos"),
        ("b", 22, "photos"),
        ("c", 33, "photos/2024/trip"),
        ("d", 44, "photos/2024"),
    ):
        rels = _write_group(root, name, seed, folder)
        transforms.update(rels)
        groups[name] = list(rels)

    formats = root / "formats"
    formats.mkdir()
    save_with_orientation(make_photo(22), formats / "b_rotated.jpg", orientation=6)
    make_photo(33).convert("CMYK").save(formats / "c_cmyk.jpg", "JPEG", quality=90)
    with Image.open(root / "photos/2024/trip/c.jpg") as c_original:
        c_original.save(formats / "c_really_png.jpg", "PNG")
    gray16(make_photo(44)).save(formats / "d_gray16.png")
    for group, rel, transform in (
        ("b", "formats/b_rotated.jpg", "exif_rotated"),
        ("c", "formats/c_cmyk.jpg", "cmyk_jpeg"),
        ("c", "formats/c_really_png.jpg", "png_named_jpg"),
        ("d", "formats/d_gray16.png", "gray16_png"),
    ):
        groups[group].append(rel)
        transforms[rel] = transform

    singles = root / "singles"
    singles.mkdir()
    make_photo(101).save(singles / "s1.jpg", "JPEG", quality=90)
    make_photo(202, (256, 256)).save(singles / "s2.png")
    make_photo(303, (240, 320)).save(singles / "s3.webp", "WEBP", quality=85)
    animated_gif(singles / "anim.gif", [make_photo(seed, (160, 120)) for seed in (606, 707, 808)])
    palette_with_transparency(404).save(singles / "logo.png", transparency=0)
    singletons = [
        "singles/s1.jpg",
        "singles/s2.png",
        "singles/s3.webp",
        "singles/anim.gif",
        "singles/logo.png",
    ]

    bad = root / "bad"
    bad.mkdir()
    data = jpeg_bytes(make_photo(505))
    (bad / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (bad / "text.jpg").write_text("this is a text file, not a JPEG\n")
    (bad / "empty.jpg").write_bytes(b"")
    skipped = {
        "bad/truncated.jpg": "truncated image",
        "bad/text.jpg": "not an image (unrecognised content)",
        "bad/empty.jpg": "empty file",
    }
    skipped_at = {"bad/truncated.jpg": "decode", "bad/text.jpg": "discover", "bad/empty.jpg": "discover"}

    (root / "README.txt").write_text("holiday photos\n")
    (root / "notes.csv").write_text("file,comment\na.jpg,nice\n")
    (root / "photos/.a_copy.jpg").write_bytes((root / "photos/a.jpg").read_bytes())
    (root / ".private").mkdir()
    (root / ".private/b_copy.jpg").write_bytes((root / "photos/b.jpg").read_bytes())
    shortcuts = root / "shortcuts"
    shortcuts.mkdir()
    os.symlink(os.path.join("..", "photos", "a.jpg"), shortcuts / "a_link.jpg")
    os.symlink("..", shortcuts / "loop")
    ignored = [
        "README.txt",
        "notes.csv",
        "photos/.a_copy.jpg",
        ".private/b_copy.jpg",
        "shortcuts/a_link.jpg",
        "shortcuts/loop",
    ]

    def ab(rel: str) -> str:
        return str(root / rel)

    def abs_list(rels: list[str]) -> list[str]:
        return [ab(r) for r in rels]

    members = [rel for rels in groups.values() for rel in rels]
    images = sorted(abs_list(members + singletons + ["bad/truncated.jpg"]))
    return {
        "root": str(root),
        "groups": {g: abs_list(rels) for g, rels in groups.items()},
        "phash_groups": {
            g: [ab(r) for r in rels if transforms[r] in PHASH_CATCHES] for g, rels in groups.items()
        },
        "transforms": {ab(r): t for r, t in transforms.items()},
        "phash_catches": sorted(PHASH_CATCHES),
        "phash_misses": sorted(PHASH_MISSES),
        "singletons": abs_list(singletons),
        "images": images,
        "decodable": [p for p in images if p != ab("bad/truncated.jpg")],
        "skipped": {ab(r): reason for r, reason in skipped.items()},
        "skipped_at": {ab(r): phase for r, phase in skipped_at.items()},
        "ignored": abs_list(ignored),
        "hidden": {ab("photos/.a_copy.jpg"): "a", ab(".private/b_copy.jpg"): "b"},
        "aliases": {ab("shortcuts/a_link.jpg"): ab("photos/a.jpg")},
        "special": {
            "cmyk": ab("formats/c_cmyk.jpg"),
            "exif_rotated": ab("formats/b_rotated.jpg"),
            "gray16": ab("formats/d_gray16.png"),
            "animated_gif": ab("singles/anim.gif"),
            "palette_transparent": ab("singles/logo.png"),
            "png_named_jpg": ab("formats/c_really_png.jpg"),
            "truncated": ab("bad/truncated.jpg"),
            "text_named_jpg": ab("bad/text.jpg"),
            "empty": ab("bad/empty.jpg"),
        },
    }


# ----------------------------------------------------------------------------- verify-stage test images


def letterbox(image: Image.Image, colour: tuple[int, int, int] = (0, 0, 0)) -> Image.Image:
    """The image centred on a square canvas of ``colour`` (bars above and below, or left and right)."""
    side = max(image.size)
    canvas = Image.new("RGB", (side, side), colour)
    canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return canvas


def overlay_text(image: Image.Image, text: str = "(c) 2024 SAMPLE") -> Image.Image:
    """The image with a semi-opaque white caption band near the bottom, like a watermark."""
    base = image.convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    w, h = base.size
    draw.rectangle((w // 10, int(h * 0.78), int(w * 0.7), int(h * 0.9)), fill=(255, 255, 255, 170))
    draw.text((w // 10 + 4, int(h * 0.8)), text, fill=(0, 0, 0, 255))
    return Image.alpha_composite(base, layer).convert("RGB")


def rotate_crop(image: Image.Image, angle: float) -> Image.Image:
    """Rotate by ``angle`` degrees and keep the central 70 % (no fill corners), as a camera tilt would."""
    rotated = image.rotate(angle, resample=Image.Resampling.BICUBIC)
    return crop_fraction(rotated, 0.3)


def studio_photo(object_seed: int, background_seed: int, size: tuple[int, int] = (300, 400)) -> Image.Image:
    """An object photographed on a plain studio background, like a product photo.

    The background (a smooth vertical gradient of one hue) and the object's colours (a two-colour tint)
    depend only on ``background_seed``; the object's texture (a photo-like patch with an elliptic outline
    covering about a third of the frame, centred) and the mild sensor noise only on ``object_seed``. Two
    different objects on the same background therefore share the background and the colour distribution
    (they look alike to global descriptors) but no object detail.
    """
    rng = np.random.default_rng(background_seed)
    width, height = size
    top, bottom = rng.uniform(150, 235, 3), rng.uniform(120, 215, 3)
    t = np.linspace(0.0, 1.0, height)[:, None, None]
    backdrop = top * (1 - t) + bottom * t + np.zeros((height, width, 3))
    dark, light = (tuple(int(c) for c in rng.integers(lo, lo + 60, 3)) for lo in (20, 170))
    texture = ImageOps.grayscale(make_photo(object_seed, (int(width * 0.6), int(height * 0.6))))
    obj = ImageOps.colorize(ImageOps.equalize(texture), dark, light)
    mask = Image.new("L", obj.size, 0)
    ImageDraw.Draw(mask).ellipse((0, 0, obj.width - 1, obj.height - 1), fill=255)
    image = Image.fromarray(np.clip(backdrop, 0, 255).astype(np.uint8))
    image.paste(obj, ((width - obj.width) // 2, (height - obj.height) // 2), mask)
    noise = np.random.default_rng(object_seed + 10_000).integers(-4, 5, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8))


def write_verify_dataset(root: Path) -> dict[str, Any]:
    """A folder of an original and its hard variants (those a perceptual hash misses), unrelated photos,
    and two different objects on one studio background.

    Returns:
        ``{"root", "original", "variants": {transform: path}, "unrelated": [paths],
        "same_background": [path, path]}`` (absolute paths).
    """
    root.mkdir(parents=True, exist_ok=True)
    original = make_photo(601, (400, 300))

    def save(image: Image.Image, name: str) -> str:
        path = root / name
        image.save(path, "JPEG", quality=92)
        return str(path.absolute())

    variants = {
        "crop_20pct": save(crop_fraction(original, 0.2), "crop.jpg"),
        "letterbox": save(letterbox(original), "letterbox.jpg"),
        "hflip": save(ImageOps.mirror(original), "flip.jpg"),
        "rot90": save(original.transpose(Image.Transpose.ROTATE_90), "rot90.jpg"),
        "rotate_7deg": save(rotate_crop(original, 7.0), "tilt.jpg"),
        "text_overlay": save(overlay_text(original), "overlay.jpg"),
    }
    return {
        "root": str(root.absolute()),
        "original": save(original, "original.jpg"),
        "variants": variants,
        "unrelated": [save(make_photo(seed, (400, 300)), f"other{seed}.jpg") for seed in (602, 603, 604)],
        "same_background": [save(studio_photo(seed, 77), f"studio{seed}.jpg") for seed in (611, 612)],
    }


def write_families(root: Path, sizes: tuple[int, ...] = (6, 5, 4)) -> dict[str, int]:
    """One base photo per family, each with variants (brightness, size, JPEG quality); path -> family.

    Families are obvious clusters for ``dedup group --method agglomerative|kmeans``.
    """
    root.mkdir(parents=True, exist_ok=True)
    truth: dict[str, int] = {}
    for family, n in enumerate(sizes):
        base = make_photo(100 + 17 * family, size=(240, 180))
        for v in range(n):
            image = ImageEnhance.Brightness(base).enhance(0.85 + 0.06 * v).resize((240 - 12 * v, 180 - 9 * v))
            path = root / f"f{family}_v{v}.jpg"
            image.save(path, quality=90 - 5 * v)
            truth[str(path)] = family
    return truth

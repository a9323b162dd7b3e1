"""Helpers of the saved-index tests: a small collection (three families of photos, an original with unrelated
photos and a studio shot), new images to assign, and the index built from them."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from dedup.config import Config, load_config

from imagegen import crop_fraction, make_photo, overlay_text, studio_photo, write_families

#: The offline default path (weight-free descriptors, verified with keypoints), three k-means clusters.
INDEX_CONFIG = {"features.extractor": "phash+thumb+color", "group.method": "kmeans", "group.clusters": 3}


def index_config(**extra: Any) -> Config:
    return load_config(overrides={**INDEX_CONFIG, **extra})


def write_collection(root: Path) -> dict[str, Any]:
    """The indexed photos under ``root`` and their ground truth."""
    families = write_families(root / "families")
    other = root / "other"
    other.mkdir(parents=True)
    original = make_photo(601, (400, 300))
    original.save(other / "original.jpg", quality=92)
    for seed in (602, 603):
        make_photo(seed, (400, 300)).save(other / f"unrelated{seed}.jpg", quality=92)
    studio_photo(611, 77).save(other / "studio611.jpg", quality=92)
    return {"root": root, "families": families, "original": other / "original.jpg", "image": original}


def write_new(folder: Path, collection: dict[str, Any]) -> dict[str, Path]:
    """New images: copies a scan groups with indexed ones (one only keypoints can confirm), look-alikes it
    does not, and a bad file."""
    folder.mkdir(parents=True)
    original = collection["image"]
    family_image = Image.open(collection["root"] / "families" / "f1_v0.jpg")
    paths = {
        "reencoded": folder / "reencoded.jpg",
        "crop": folder / "crop.jpg",
        "flip": folder / "flip.jpg",
        "overlay": folder / "overlay.jpg",
        "unrelated": folder / "unrelated.jpg",
        "studio": folder / "studio612.jpg",
    }
    family_image.save(paths["reencoded"], quality=45)
    crop_fraction(original, 0.2).save(paths["crop"], quality=90)
    ImageOps.mirror(original).save(paths["flip"], quality=90)
    overlay_text(original).save(paths["overlay"], quality=90)
    make_photo(777, (400, 300)).save(paths["unrelated"], quality=90)
    studio_photo(612, 77).save(paths["studio"], quality=92)
    (folder / "broken.jpg").write_bytes(jpeg_bytes(original)[:2000])
    return paths


def jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )

"""What the keep policy ``best`` knows about an image file besides its pixel size: format, estimated JPEG
quality, whether its pixels are lossless, colour or grayscale, and whether it is a derived copy.

The facts come from the file's header (format, mode, JPEG quantisation tables, EXIF, XMP), read without
decoding pixels, except for a lossless file (PNG, BMP, TIFF, ...): its pixels are decoded once to look for
the 8x8 block grid JPEG compression leaves behind, which gives away a lossless copy made from a JPEG.
The scan reads them only for the images that end up in a duplicate group (:func:`read_all`).

- **quality** -- the JPEG quality (1-100) whose standard (libjpeg / IJG) luminance quantisation table is
  nearest to the file's own (:func:`estimate_quality`). Exact for files written by libjpeg, Pillow,
  ImageMagick, GIMP; the nearest standard quality for cameras and other encoders. ``None`` for other
  formats.
- **lossless** -- PNG, BMP, TIFF (unless JPEG-compressed), PPM/PGM/PBM, QOI, TGA, lossless WebP; not
  palette images (a 256-colour copy of a photo has lost colours), and not a lossless file that was
  *converted* from a lossy one (see *derived*).
- **derived** -- the file says it is an edited or converted copy: EXIF ``Software`` / ``ProcessingSoftware``
  names an editing or converting program, XMP records a ``DerivedFrom`` or an edit ``History``, a lossless
  file carries camera EXIF (``Make``/``Model``: cameras write JPEG or raw, not PNG/BMP/GIF/WebP), or its
  pixels show the JPEG 8x8 block grid (:data:`GRID_RATIO`).
- **grayscale** -- the stored mode has one channel (``L``, ``LA``, ``1``, ``I``, ``I;16``, ``F``).
- **recompressed** -- a JPEG saved at quality >= :data:`RECOMPRESSED_MIN_QUALITY` whose pixels still show
  a strong 8x8 block grid (:data:`RECOMPRESSED_RATIO`): it was made from a more strongly compressed JPEG
  (an edit or a copy saved again at a higher setting), so its nominal quality says nothing; such a file
  is also *derived*.

Nothing here raises for a bad file: unknown facts stay ``None`` / ``False``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

#: The IJG standard luminance quantisation table (quality 50), natural order; Pillow's quantisation tables
#: are in natural order too (only their sum is used, so the order does not matter).
STANDARD_LUMINANCE = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip

#: A lossless image whose mean pixel step (steps clipped at :data:`GRID_CLIP` grey levels, so that edges do
#: not count) across one of the 8 column or row offsets is this many times the median of the 8 shows the
#: JPEG block grid: it was decoded from a JPEG. Measured: generated photos saved losslessly 1.02-1.03, the
#: imagededup lossless test images (PGM, PBM, PPM, TIFF, GIF) 1.00-1.08; the generated photos decoded from
#: JPEG q70 1.65-1.87 (q90: 1.05-1.14, not seen); real clothing photos (JPEG q70) 1.11-2.48, 6 of 8 >= 1.2.
GRID_RATIO = 1.2
GRID_CLIP = 8.0
#: Sides below this many pixels are not checked for a block grid (too few blocks to tell).
GRID_MIN_SIDE = 64
#: A JPEG of at least this quality is checked for the grid of an earlier, stronger compression.
RECOMPRESSED_MIN_QUALITY = 85
#: ... and counts as recompressed at this grid ratio or more. Its own compression at q >= 85 leaves less:
#: generated photos at q90 1.05-1.14; genuine camera JPEGs of q93-97 in the shared test sets at most 1.22;
#: clothing photos (q70) saved again at q90 after an edit or flip: median 1.38-1.44 (2,000 files).
RECOMPRESSED_RATIO = 1.3
#: Smaller JPEGs are not checked for recompression (100 x 100 px camera thumbnails reach 1.36).
RECOMPRESSED_MIN_SIDE = 128

#: What the facts of a file depend on besides its bytes (the feature cache keys stored facts by it); bump the
#: version when :func:`read_facts` changes.
FACTS_PARAMS = (
    f"facts/v1/grid-{GRID_RATIO}-{GRID_CLIP}-{GRID_MIN_SIDE}"
    f"/recompressed-{RECOMPRESSED_MIN_QUALITY}-{RECOMPRESSED_RATIO}-{RECOMPRESSED_MIN_SIDE}"
)

_LOSSLESS_FORMATS = frozenset({"PNG", "BMP", "DIB", "TIFF", "PPM", "QOI", "TGA", "SGI", "PCX", "ICO", "PSD"})
_CAMERA_FORMATS = frozenset({"JPEG", "MPO", "TIFF"})  # formats a camera may write, with Make/Model EXIF
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
# Programs that edit or convert images; their name in EXIF Software marks a derived copy (camera firmware
# and phone OS versions, also written there, do not).
_EDITORS = (
    "photoshop",
    "lightroom",
    "gimp",
    "paint.net",
    "paintshop",
    "affinity",
    "pixelmator",
    "snapseed",
    "picasa",
    "imagemagick",
    "graphicsmagick",
    "pillow",
    "irfanview",
    "xnview",
    "acdsee",
    "darktable",
    "rawtherapee",
    "capture one",
    "luminar",
    "photoscape",
    "fotor",
    "canva",
    "krita",
    "inkscape",
    "preview",
    "photos",
    "windows photo",
    "microsoft photo",
    "facetune",
    "vsco",
    "instagram",
    "squoosh",
    "tinypng",
    "jpegoptim",
    "mozjpeg",
    "libvips",
    "ffmpeg",
    "convert",
    "resize",
    "edited",
)
_SOFTWARE, _PROCESSING_SOFTWARE, _MAKE, _MODEL = 0x0131, 0x000B, 0x010F, 0x0110


@dataclass(frozen=True)
class ImageFacts:
    """Facts of one image file used by the keep policy ``best`` (None = not known).

    Attributes:
        format: Pillow's format name (``JPEG``, ``PNG``, ``WEBP``...).
        quality: estimated JPEG quality 1-100 (JPEG files only).
        lossless: the pixels are as good as the file's format can hold (see the module docstring).
        derived: the file marks itself as an edited or converted copy.
        grayscale: one channel only.
        recompressed: a JPEG re-saved at a high quality from a more strongly compressed one.
    """

    format: str | None = None
    quality: int | None = None
    lossless: bool | None = None
    derived: bool | None = None
    grayscale: bool | None = None
    recompressed: bool | None = None


def _ijg_table(quality: int) -> np.ndarray:
    """The IJG luminance table libjpeg writes for ``quality`` (1-100), entries clamped to 1..255."""
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    table = np.floor((np.asarray(STANDARD_LUMINANCE, dtype=np.float64) * scale + 50) / 100)
    return np.clip(table, 1, 255)


_IJG_SORTED = {q: np.sort(_ijg_table(q)) for q in range(1, 101)}


def estimate_quality(table: Sequence[int]) -> int:
    """The IJG quality (1-100) whose luminance table is nearest to ``table`` (64 entries, any order: the
    sorted entries are compared, L1 distance; the higher quality wins a tie). Exact for libjpeg-written
    files; the nearest standard quality for other encoders."""
    values = np.sort(np.asarray([int(v) for v in table], dtype=np.float64))
    if values.shape != (64,):
        return 100 if values.size and values.max() <= 1 else 50
    best = min(range(100, 0, -1), key=lambda q: float(np.abs(_IJG_SORTED[q] - values).sum()))
    return int(best)


def grid_ratio(image: Image.Image) -> float:
    """How strongly the pixels show an 8x8 block grid: the larger, over both directions, of the mean
    (clipped) step at the strongest of the 8 column (row) offsets divided by the median step of all 8
    (1.0 = no grid). Offset-free, so a crop of a JPEG that shifted the grid is still seen."""
    a = np.asarray(image.convert("L"), dtype=np.float32)
    ratios = []
    for arr in (a, a.T):
        d = np.minimum(np.abs(np.diff(arr, axis=1)), GRID_CLIP)
        w = d.shape[1] // 8 * 8
        if w < 8 or d.shape[0] == 0:
            continue
        phases = d[:, :w].mean(axis=0).reshape(-1, 8).mean(axis=0)
        median = float(np.median(phases))
        ratios.append(float(phases.max()) / median if median > 0 else 1.0)
    return max(ratios, default=1.0)


def _software_edits(text: object) -> bool:
    if not isinstance(text, str):
        return False
    low = text.strip().lower()
    return bool(low) and any(name in low for name in _EDITORS)


def _xmp_derived(im: Image.Image) -> bool:
    xmp = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")
    if isinstance(xmp, bytes):
        xmp = xmp.decode("utf-8", "replace")
    if not isinstance(xmp, str):
        return False
    return any(mark in xmp for mark in ("DerivedFrom", 'stEvt:action="converted"', "photoshop:History"))


def _webp_lossless(path: str) -> bool:
    """A WebP file whose image is coded losslessly (a ``VP8L`` chunk, not ``VP8 ``)."""
    with open(path, "rb") as f:
        head = f.read(1 << 12)
    lossless, lossy = head.find(b"VP8L"), head.find(b"VP8 ")
    return lossless != -1 and (lossy == -1 or lossless < lossy)


def read_facts(path: str, *, max_pixels: int) -> ImageFacts:
    """The :class:`ImageFacts` of one file (unknown facts when it cannot be read).

    Args:
        path: the image file.
        max_pixels: lossless files with more pixels are not decoded for the block-grid check.
    """
    try:
        with Image.open(path) as im:
            fmt = im.format
            mode = im.mode
            try:
                exif = im.getexif()
            except Exception:  # noqa: BLE001 - a damaged EXIF block is not worth failing over
                exif = Image.Exif()
            edited = (
                _software_edits(exif.get(_SOFTWARE))
                or _software_edits(exif.get(_PROCESSING_SOFTWARE))
                or _software_edits(im.info.get("Software"))
                or _xmp_derived(im)
            )
            quality = None
            if fmt in ("JPEG", "MPO"):
                tables = getattr(im, "quantization", None) or {}
                if 0 in tables:
                    quality = estimate_quality(tables[0])
            lossless = fmt in _LOSSLESS_FORMATS and mode not in ("P", "PA")
            if fmt == "TIFF" and im.info.get("compression") in ("jpeg", "tiff_jpeg"):
                lossless = False
            if fmt == "WEBP":
                lossless = _webp_lossless(path) and mode not in ("P", "PA")
            camera = bool(exif.get(_MAKE) or exif.get(_MODEL)) and fmt not in _CAMERA_FORMATS
            converted = recompressed = False
            w, h = im.size
            if lossless:
                converted = camera
                if not converted and min(w, h) >= GRID_MIN_SIDE and w * h <= max_pixels:
                    im.load()
                    converted = grid_ratio(im) >= GRID_RATIO
            elif (
                quality is not None
                and quality >= RECOMPRESSED_MIN_QUALITY
                and min(w, h) >= RECOMPRESSED_MIN_SIDE
                and w * h <= max_pixels
            ):
                im.load()
                recompressed = grid_ratio(im) >= RECOMPRESSED_RATIO
            return ImageFacts(
                format=fmt,
                quality=quality,
                lossless=lossless and not converted,
                derived=edited or converted or camera or recompressed,
                grayscale=mode in _GRAY_MODES,
                recompressed=recompressed if quality is not None else None,
            )
    except Exception:  # noqa: BLE001 - Pillow raises many types for damaged files; facts stay unknown
        return ImageFacts()


def read_all(paths: Sequence[str], *, max_pixels: int) -> list[ImageFacts]:
    """:func:`read_facts` of each path (read in worker threads), in order."""
    if not paths:
        return []
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dedup-facts") as pool:
        return list(pool.map(lambda p: read_facts(p, max_pixels=max_pixels), paths))

"""Thumbnails of report images as base64 JPEG text (the HTML page embeds them as data URIs; the notebook
summary and the review page use them too), decoded like the scan decodes."""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Callable, Sequence

from dedup.config import DEFAULT_MAX_PIXELS

ProgressFn = Callable[[str, int, "int | None"], None]

THUMBNAIL_SIZE = 160  # longest side in pixels of the thumbnails embedded in the HTML report
THUMBNAIL_QUALITY = 70  # their JPEG quality


def thumbnail(path: str, *, size: int = THUMBNAIL_SIZE, max_pixels: int = DEFAULT_MAX_PIXELS) -> str | None:
    """A JPEG thumbnail (longest side ``size``) of one image as base64 text, or None if it cannot be read.

    Decoding goes through :func:`dedup.images.open_image` (EXIF orientation, CMYK, 16-bit, ... handled);
    a file that vanished or broke since the scan gives None (the report shows a placeholder).
    """
    from PIL import Image

    from dedup.errors import ImageError
    from dedup.images import open_image

    try:
        image, _, _ = open_image(path, max_pixels=max_pixels, draft_size=size)
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=THUMBNAIL_QUALITY, optimize=True)
    except (ImageError, OSError):
        return None
    return base64.b64encode(buf.getvalue()).decode("ascii")


def make_thumbnails(
    paths: Sequence[str],
    *,
    size: int = THUMBNAIL_SIZE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: ProgressFn | None = None,
) -> dict[str, str | None]:
    """:func:`thumbnail` of each path (decoded in worker threads): path -> base64 JPEG or None."""
    from concurrent.futures import ThreadPoolExecutor

    unique = list(dict.fromkeys(paths))
    out: dict[str, str | None] = {}
    if progress:
        progress("thumbnails", 0, len(unique))
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dedup-thumb") as pool:
        for done, (path, thumb) in enumerate(
            zip(
                unique,
                pool.map(lambda p: thumbnail(p, size=size, max_pixels=max_pixels), unique),
                strict=True,
            ),
            start=1,
        ):
            out[path] = thumb
            if progress and (done % 50 == 0 or done == len(unique)):
                progress("thumbnails", done, len(unique))
    return out

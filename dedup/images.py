"""Steps 1 and 2 of the pipeline: discover image files and decode them to RGB.

Images are recognised by their content (Pillow identifies the file header without decoding pixels), so
a PNG named ``.jpg`` is found and a text file named ``.jpg`` is reported as skipped. Every problem with
one file becomes a :class:`Skipped` entry (discover) or an :class:`~dedup.errors.ImageError` (decode);
nothing here prints, and no Pillow or OS exception escapes.
"""

from __future__ import annotations

import errno
import math
import os
import re
import stat
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from dedup.config import DEFAULT_REDUCE_ABOVE, DiscoverConfig
from dedup.errors import ImageError, InputError, NotRegularFileError

ProgressFn = Callable[[str, int, int | None], None]
"""Progress callback ``(phase, done, total)``; ``total`` is ``None`` when unknown."""

# Exceptions Pillow raises for damaged or unsupported files (besides OSError).
_PIL_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    struct.error,
    ZeroDivisionError,
    Image.DecompressionBombError,
)
# ... plus Pillow's bomb warning, which is an exception when warnings are turned into errors.
_PIL_ERRORS_OR_BOMB: tuple[type[BaseException], ...] = (*_PIL_ERRORS, Image.DecompressionBombWarning)

# Extensions under which a file is expected to be an image: such a file whose content is not an image,
# or that cannot be read at all, is reported as skipped instead of being silently ignored.
IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".png",
        ".apng",
        ".gif",
        ".bmp",
        ".dib",
        ".tif",
        ".tiff",
        ".webp",
        ".ppm",
        ".pgm",
        ".pbm",
        ".pnm",
        ".ico",
        ".heic",
        ".heif",
        ".avif",
        ".jp2",
        ".j2k",
        ".jpx",
        ".qoi",
        ".psd",
        ".tga",
        ".mpo",
    }
)
# Vector formats: recognised by name and reported as skipped (dedup compares pixels, and has no rasteriser).
VECTOR_EXTENSIONS = frozenset({".svg", ".svgz"})

# Raster formats with unambiguous magic numbers: tried on every file, whatever its name.
_SNIFF_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP", "PPM", "ICO", "JPEG2000", "AVIF", "QOI", "PSD")
# Pillow formats that identify files it cannot decode to pixels (stubs or external programs).
_UNDECODABLE_FORMATS = frozenset({"BUFR", "GRIB", "HDF5", "MPEG", "WMF", "EPS", "PDF"})

_PROGRESS_EVERY = 200  # files between two discover progress calls

NOT_AN_IMAGE = "not an image (unrecognised content)"
EMPTY_FILE = "empty file"
BROKEN_SYMLINK = "broken symlink"
PERMISSION_DENIED = "permission denied"
TRUNCATED = "truncated image"
VECTOR_IMAGE = "vector image (SVG): not supported; convert it to PNG to compare it"


@dataclass(frozen=True)
class Skipped:
    """A file that was not used, and why.

    Attributes:
        path: absolute path as discovered (not resolved through symlinks).
        reason: short human reason, e.g. "empty file", "truncated image", "permission denied".
    """

    path: str
    reason: str


@dataclass(frozen=True)
class ImageFile:
    """A discovered image candidate (its content was identified as an image).

    Attributes:
        path: absolute path (not resolved through symlinks: the path the user sees).
        size: file size in bytes (of the target if a symlink).
        mtime: modification time, seconds since the epoch (``st_mtime``).
        mtime_ns: modification time in integer nanoseconds (``st_mtime_ns``; the feature cache's key), or
            -1 when unknown (the cache then stats the file).
    """

    path: str
    size: int
    mtime: float
    mtime_ns: int = -1


@dataclass(frozen=True)
class ImageRecord:
    """An image that decoded fine.

    Attributes:
        path: absolute path, as in :class:`ImageFile`.
        size: file size in bytes.
        mtime: modification time, seconds since the epoch.
        width: width in pixels after EXIF orientation (full size, even if decoded in draft mode).
        height: height in pixels after EXIF orientation.
        format, quality, lossless, derived, grayscale, recompressed: the file's
            :class:`dedup.facts.ImageFacts` (for the keep policy ``best``); read by the scan for the images
            in a duplicate group, None otherwise.
    """

    path: str
    size: int
    mtime: float
    width: int
    height: int
    format: str | None = None
    quality: int | None = None
    lossless: bool | None = None
    derived: bool | None = None
    grayscale: bool | None = None
    recompressed: bool | None = None


# --------------------------------------------------------------------------------------------- opening


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words: "FIFO", "character device", "socket", ..."""
    kinds = (
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISDIR, "folder"),
    )
    return next((name for test, name in kinds if test(mode)), "special file")


def not_regular(mode: int) -> str:
    """The skip reason of a path that is not a regular file: ``not a regular file (FIFO)``."""
    return f"not a regular file ({file_kind(mode)})"


_OPEN_FLAGS = (
    os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
)


def open_regular(path: str) -> BinaryIO:
    """Open a scanned file for reading, only if it is (still) a regular file.

    The check is made on the open descriptor (``fstat``), so a FIFO, a device or a link to ``/dev/zero``
    swapped in after discovery is refused, never read; ``O_NONBLOCK`` makes the open itself return at once
    for a FIFO without a writer (it is switched off again for reading a regular file). Every read of a
    scanned file's bytes (sniffing, decoding, content digests, copies) goes through here.

    Raises:
        NotRegularFileError: the path is not a regular file (an :class:`OSError`).
        OSError: it cannot be opened.
    """
    fd = os.open(path, _OPEN_FLAGS)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(path, file_kind(mode))
        if _OPEN_FLAGS & getattr(os, "O_NONBLOCK", 0):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


# --------------------------------------------------------------------------------------------- discover


def _has_image_extension(path: str) -> bool:
    ext = os.path.splitext(path)[1].lower()
    return ext in IMAGE_EXTENSIONS or ext in VECTOR_EXTENSIONS


@cache
def _extension_formats() -> dict[str, str]:
    """Lower-case extension -> Pillow format, for the formats Pillow can open and decode."""
    Image.init()
    return {
        ext: fmt
        for ext, fmt in Image.registered_extensions().items()
        if fmt in Image.OPEN and fmt not in _UNDECODABLE_FORMATS
    }


def _sniff_formats(path: str) -> list[str]:
    """Formats tried when identifying ``path``: the common ones plus the one its extension names."""
    formats = list(_SNIFF_FORMATS)
    ext_format = _extension_formats().get(os.path.splitext(path)[1].lower())
    if ext_format and ext_format not in formats:
        formats.append(ext_format)
    return formats


# The first bytes of the common formats. Checking them is 10-20x faster than letting Pillow parse a JPEG's
# header (Exif and MPO markers included): 1 s of a re-scan of 2,000 photos.
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*")


def _has_image_signature(head: bytes) -> bool:
    """Whether ``head`` (a file's first 12 bytes) starts like a JPEG, PNG, GIF, TIFF or WebP file."""
    return head.startswith(_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def _is_image(path: str) -> bool:
    """Whether Pillow identifies the content of ``path`` as an image (reads the header only).

    A file that is identified but damaged (or too large: a decompression bomb) counts as an image;
    decoding it later reports the problem.

    Raises:
        OSError: the file cannot be opened or read (e.g. ``PermissionError``).
    """
    try:
        with open_regular(path) as f:
            if _has_image_signature(f.read(12)):
                return True  # Pillow would identify it too (or find it damaged, which counts as an image)
            f.seek(0)
            with Image.open(f, formats=_sniff_formats(path)):
                return True
    except UnidentifiedImageError:
        return False
    except OSError as e:
        if e.errno is not None:  # a real I/O error (permission, EIO, ...), not a Pillow complaint
            raise
        return True
    except _PIL_ERRORS_OR_BOMB:
        return True


def image_problem(path: str) -> str | None:
    """Why ``path`` is not an image file the scan would use, or None when it is one: what discovery checks
    (a regular file, not empty, content identified as an image), for callers that get paths from elsewhere
    (a report). Reads the file's header only."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            return not_regular(st.st_mode)
        if st.st_size == 0:
            return EMPTY_FILE
        return None if _is_image(path) else NOT_AN_IMAGE
    except OSError as e:
        return _os_reason(e, "cannot read")


@dataclass
class _Walk:
    """Mutable state of one discover call (private)."""

    cfg: DiscoverConfig
    excluded: frozenset[tuple[int, int]]
    progress: ProgressFn | None
    files: list[ImageFile] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    seen_files: set[tuple[int, int]] = field(default_factory=set)
    seen_dirs: set[tuple[int, int]] = field(default_factory=set)
    n_seen: int = 0

    def root(self, path: str, st: os.stat_result) -> None:
        """Scan one path given by the user (a folder, or a file that is sniffed whatever its name)."""
        if stat.S_ISDIR(st.st_mode):
            if self._enter(st):
                self._walk(path)
        else:
            self._file(path, st, explicit=True)

    def _enter(self, st: os.stat_result) -> bool:
        """Mark a folder visited; False when it was seen before (symlink loop, repeated path) or excluded."""
        key = (st.st_dev, st.st_ino)
        if key in self.seen_dirs or key in self.excluded:
            return False
        self.seen_dirs.add(key)
        return True

    def _walk(self, top: str) -> None:
        """Depth-first walk in sorted name order, without recursion (deep trees are fine)."""
        stack: list[Iterator[tuple[str, os.stat_result]]] = [iter(self._entries(top))]
        while stack:
            item = next(stack[-1], None)
            if item is None:
                stack.pop()
                continue
            path, st = item
            if stat.S_ISDIR(st.st_mode):
                if self.cfg.recursive and self._enter(st):
                    stack.append(iter(self._entries(path)))
            else:
                self._file(path, st, explicit=False)

    def _entries(self, folder: str) -> list[tuple[str, os.stat_result]]:
        """The folder's entries worth looking at, sorted by name, with their (followed) stat."""
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            self.skipped.append(Skipped(folder, _os_reason(e, "cannot read folder")))
            return []
        result = []
        for entry in entries:
            if entry.name.startswith(".") and not self.cfg.include_hidden:
                continue
            st = self._stat(entry)
            if st is not None:
                result.append((entry.path, st))
        return result

    def _stat(self, entry: os.DirEntry[str]) -> os.stat_result | None:
        """Stat an entry, following it if it is a symlink and that is allowed; None = ignore it."""
        link = False
        try:
            link = entry.is_symlink()
            if link and not self.cfg.follow_symlinks:
                return None
            return os.stat(entry.path) if link else entry.stat(follow_symlinks=False)
        except OSError as e:
            dangling = link and (isinstance(e, FileNotFoundError) or e.errno == errno.ELOOP)
            self._unreadable(entry.path, BROKEN_SYMLINK if dangling else _os_reason(e, "cannot read"))
            return None

    def _unreadable(self, path: str, reason: str, explicit: bool = False) -> None:
        """Report a file whose content cannot be checked, if it looks like it was meant to be an image."""
        if explicit or _has_image_extension(path):
            self.skipped.append(Skipped(path, reason))

    def _file(self, path: str, st: os.stat_result, *, explicit: bool) -> None:
        """Consider one file: sniff its content once per (device, inode)."""
        if not stat.S_ISREG(st.st_mode):  # FIFOs, sockets, devices: never opened
            self._unreadable(path, not_regular(st.st_mode), explicit)
            return
        key = (st.st_dev, st.st_ino)
        if key in self.seen_files or key in self.excluded:
            return
        self.seen_files.add(key)
        self._tick()
        if st.st_size == 0:
            self._unreadable(path, EMPTY_FILE, explicit)
            return
        try:
            found = _is_image(path)
        except OSError as e:
            self._unreadable(path, _os_reason(e, "cannot read"), explicit)
            return
        if found:
            self.files.append(ImageFile(path, st.st_size, st.st_mtime, st.st_mtime_ns))
        elif os.path.splitext(path)[1].lower() in VECTOR_EXTENSIONS:
            self.skipped.append(Skipped(path, VECTOR_IMAGE))
        else:
            self._unreadable(path, NOT_AN_IMAGE, explicit)

    def _tick(self) -> None:
        self.n_seen += 1
        if self.progress is not None and self.n_seen % _PROGRESS_EVERY == 0:
            self.progress("discover", self.n_seen, None)


def _os_reason(e: OSError, what: str) -> str:
    """Short reason for an OS error: "permission denied", "not a regular file (...)", or "<what>: <error>"."""
    if isinstance(e, NotRegularFileError):
        return str(e.strerror)
    if isinstance(e, PermissionError):
        return PERMISSION_DENIED
    return f"{what}: {(e.strerror or str(e)).lower()}"


def stat_root(path: str | Path) -> tuple[str, os.stat_result]:
    """Absolute path and (followed) stat of a path given by the user.

    Raises:
        InputError: the path does not exist (also a broken symlink) or cannot be accessed.
    """
    absolute = os.path.abspath(path)
    try:
        return absolute, os.stat(absolute)
    except FileNotFoundError as e:
        raise InputError(f"path does not exist: {path}") from e
    except OSError as e:
        raise InputError(f"cannot access path {path}: {e.strerror or e}") from e


def _identities(paths: Sequence[str | Path]) -> frozenset[tuple[int, int]]:
    """(device, inode) of each existing path: compares like resolved paths, missing ones are ignored."""
    ids = set()
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            continue
        ids.add((st.st_dev, st.st_ino))
    return frozenset(ids)


def discover(
    paths: Sequence[str | Path],
    cfg: DiscoverConfig,
    exclude: Sequence[str | Path] = (),
    progress: ProgressFn | None = None,
) -> tuple[list[ImageFile], list[Skipped]]:
    """Find the image files under ``paths``, recognised by content.

    Folders are walked recursively (only their direct files if ``cfg.recursive`` is false) in sorted
    name order; a path may also be a single file. Each file is counted once, by (device, inode): the
    first path in sorted walk order wins, also across symlinks, repeated or nested ``paths``.
    Symlinked folders are followed (if ``cfg.follow_symlinks``) without looping. Hidden names
    (starting with ".") are skipped unless ``cfg.include_hidden``; ``paths`` themselves are always
    scanned. Non-image files are ignored silently unless their extension is an image one
    (:data:`IMAGE_EXTENSIONS`, or an SVG's, :data:`VECTOR_EXTENSIONS`) or they were given explicitly; then
    they are reported as skipped, as are broken symlinks, empty files, FIFOs, devices and sockets (never
    opened) and unreadable files or folders.

    Args:
        paths: folders and/or files to scan.
        cfg: discover options.
        exclude: folders (or files) not to scan, compared by identity (like resolved paths); paths that
            do not exist are ignored.
        progress: optional callback, called as ``progress("discover", n_files_seen, None)`` now and then
            and once at the end.

    Returns:
        ``(images, skipped)``, both sorted by path; paths are absolute (``os.path.abspath``, symlinks
        not resolved). ``images`` may still fail to decode (e.g. truncated files).

    Raises:
        InputError: one of ``paths`` does not exist or cannot be accessed (checked before any scanning).
    """
    unique = {os.path.abspath(p): p for p in paths}
    roots = [stat_root(unique[absolute]) for absolute in sorted(unique)]
    walk = _Walk(cfg, _identities(exclude), progress)
    for path, st in roots:
        walk.root(path, st)
    if progress is not None:
        progress("discover", walk.n_seen, None)
    return sorted(walk.files, key=lambda f: f.path), sorted(walk.skipped, key=lambda s: s.path)


# ----------------------------------------------------------------------------------------------- decode

_ORIENTATION_TAG = 0x0112
_SWAPS_AXES = frozenset({5, 6, 7, 8})  # EXIF orientations that rotate by 90 degrees


def _orientation(im: Image.Image) -> int:
    """EXIF orientation 1-8 of an opened image; 1 (as stored) when absent or malformed."""
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
    except _PIL_ERRORS:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _bomb_reason(pixels: int | None, limit: int) -> str:
    """Skip reason for an image over the pixel limit (``pixels`` None when Pillow did not say)."""
    size = f"{pixels} pixels" if pixels is not None else "too many pixels"
    return f"decompression bomb ({size} > limit {limit})"


def _pillow_bomb_reason(e: BaseException, max_pixels: int) -> str:
    """Skip reason from Pillow's "Image size (N pixels) exceeds limit of M pixels, ..." message."""
    numbers = [int(n) for n in re.findall(r"(\d+) pixels", str(e))]
    pixels = numbers[0] if numbers else None
    limit = min(max_pixels, numbers[1]) if len(numbers) > 1 else max_pixels
    return _bomb_reason(pixels, limit)


def _short_reason(e: BaseException) -> str:
    """A one-line skip reason for a Pillow / OS failure while decoding."""
    message = str(e)
    if isinstance(e, EOFError) or "truncated" in message.lower():
        return TRUNCATED
    if isinstance(e, PermissionError):
        return PERMISSION_DENIED
    if isinstance(e, NotRegularFileError):
        return str(e.strerror)
    if isinstance(e, UnidentifiedImageError):
        return "cannot decode: unrecognised image format"
    if isinstance(e, OSError) and e.errno is not None:
        return f"cannot read: {(e.strerror or message).lower()}"
    first_line = message.splitlines()[0] if message else type(e).__name__
    return f"cannot decode: {first_line[:120]}"


#: Pixels converted per step when scaling high bit depths to 8 bit (float64 work arrays stay ~8 MB).
_SCALE_BAND_PIXELS = 1 << 20


def _bands(im: Image.Image) -> Iterator[tuple[int, np.ndarray]]:
    """``(top row, float64 array of rows)`` of a single-channel image, a band of rows at a time, NaN -> 0
    and infinities -> the largest finite values (so a full-size float64 copy is never made)."""
    width, height = im.size
    rows = max(1, _SCALE_BAND_PIXELS // max(1, width))
    for top in range(0, height, rows):
        band = im.crop((0, top, width, min(height, top + rows)))
        yield top, np.nan_to_num(np.asarray(band, dtype=np.float64))


def _scale_to_uint8(im: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer or float single-channel image -> "L", scaling the value range.

    ``I;16*`` spans 0-65535. ``I`` is treated as 16-bit when its values fit 0-65535 (how Pillow loads
    many 16-bit files), else stretched min-max. ``F`` is treated as 0-1 when it fits, else stretched.
    Works band by band: besides the 8-bit result, memory is a few MB whatever the image size.
    """
    lo, hi = 0.0, 0.0
    if not im.mode.startswith("I;16"):
        extrema = [(float(a.min()), float(a.max())) for _, a in _bands(im) if a.size]
        if extrema:
            lo, hi = min(e[0] for e in extrema), max(e[1] for e in extrema)
    out = np.zeros((im.size[1], im.size[0]), dtype=np.uint8)
    for top, a in _bands(im):
        if im.mode.startswith("I;16") or (im.mode == "I" and lo >= 0 and hi <= 65535):
            scaled = a / 257.0
        elif im.mode == "F" and lo >= 0 and hi <= 1:
            scaled = a * 255.0
        else:
            scaled = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        out[top : top + len(a)] = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(out)  # 2-D uint8 -> "L"


def _has_alpha(im: Image.Image) -> bool:
    """An alpha channel, or a transparent palette entry / colour key (PNG tRNS, GIF transparency)."""
    if im.mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        return True
    return im.mode in ("P", "L", "RGB") and "transparency" in im.info


def to_rgb(im: Image.Image) -> Image.Image:
    """A new RGB image from any Pillow mode: alpha composited on white, high bit depths scaled to 8 bit.

    Raises:
        ValueError: Pillow has no conversion from this mode to RGB.
    """
    if _has_alpha(im):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if im.mode.startswith("I") or im.mode == "F":
        return _scale_to_uint8(im).convert("RGB")
    return im.convert("RGB")  # also RGB itself: convert returns a copy that outlives the file


# EXIF orientation -> the transpose that shows the image upright (what ImageOps.exif_transpose does).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# At most one image above ``reduce_above`` pixels is held at full size at a time, in the whole process
# (decode threads, keypoints, thumbnails): with N threads, decoding needs one full-size buffer, not N.
_FULL_SIZE = threading.Lock()


def _reduce(im: Image.Image, limit: int, floor: int | None) -> Image.Image:
    """``im`` shrunk by a whole factor (box filter: the mean of each block) to at most ``limit`` pixels, both
    sides staying >= ``floor`` (the size the caller needs); ``im`` itself when no shrinking is needed."""
    width, height = im.size
    factor = math.ceil(math.sqrt(width * height / limit))
    if floor:
        factor = min(factor, max(1, min(width, height) // floor))
    if factor <= 1:
        return im
    if im.mode == "1":
        im = im.convert("L")  # one byte per pixel either way; a box filter keeps thin lines visible
    size = (max(1, -(-width // factor)), max(1, -(-height // factor)))
    if im.mode == "P":
        return im.resize(size, Image.Resampling.NEAREST)  # keeps the palette (and its transparency)
    try:
        return im.reduce(factor)
    except ValueError:  # modes reduce() does not take (I;16...): the same box filter through resize()
        return im.resize(size, Image.Resampling.BOX)


def _decode(
    im: Image.Image, *, max_pixels: int, draft_size: int | None, reduce_above: int
) -> tuple[Image.Image, int, int]:
    """Decode an opened image: size check, draft, first frame, shrinking, EXIF orientation, RGB."""
    orientation = _orientation(im)
    width, height = im.size[::-1] if orientation in _SWAPS_AXES else im.size
    if width * height > max_pixels:
        raise ImageError(_bomb_reason(width * height, max_pixels))
    if draft_size:
        im.draft("RGB", (draft_size, draft_size))  # JPEG only; keeps both sides >= draft_size
    large = im.size[0] * im.size[1] > reduce_above
    with _FULL_SIZE if large else nullcontext():
        im.load()  # the first frame: Pillow opens animated GIF / WebP / APNG positioned on frame 0
        work = _reduce(im, reduce_above, draft_size) if large else im
    if orientation in _TRANSPOSE:
        work = work.transpose(_TRANSPOSE[orientation])
    return to_rgb(work), width, height


def open_image(
    path: str, *, max_pixels: int, draft_size: int | None, reduce_above: int = DEFAULT_REDUCE_ABOVE
) -> tuple[Image.Image, int, int]:
    """Decode one image file to RGB. Thread-safe (no global Pillow settings are changed).

    EXIF orientation is applied; CMYK, palette, alpha (composited on white), grayscale, 1-bit, 16-bit
    and float images are converted to 8-bit RGB; animated images give their first frame.

    Memory: Pillow holds the image at full size once (at most 4 bytes per pixel, so ``max_pixels`` bounds
    it); an image of more than ``reduce_above`` pixels (after JPEG drafting) is shrunk by a whole factor
    right after loading, before any conversion, and only one such image is held at full size at a time in
    the process. High bit depths are scaled to 8 bit band by band, never as a full-size float copy.

    Args:
        path: image file.
        max_pixels: images with more pixels (width * height) are refused as decompression bombs.
            Pillow's own hard limit (``2 * Image.MAX_IMAGE_PIXELS``) still applies above it.
        draft_size: side in pixels the caller needs; JPEGs are then decoded at a reduced scale whose
            width and height both stay >= ``draft_size``. ``None`` = full resolution.
        reduce_above: images with more pixels are shrunk (box filter, by a whole factor, both sides
            staying >= ``draft_size``) to at most this many pixels (``decode.reduce_above``).

    Returns:
        ``(image, width, height)``: an RGB image (possibly smaller than full size when drafted) and the
        full width and height in pixels after EXIF orientation.

    Raises:
        ImageError: "empty file", "truncated image", "decompression bomb (N pixels > limit M)",
            "permission denied", "cannot decode: <reason>" or "cannot read: <reason>", or "not a regular
            file (FIFO)" (or another kind) for a path that is no longer a regular file.
    """
    try:
        with open_regular(path) as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise ImageError(EMPTY_FILE)
            with Image.open(f, formats=_sniff_formats(path)) as im:
                return _decode(im, max_pixels=max_pixels, draft_size=draft_size, reduce_above=reduce_above)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(_pillow_bomb_reason(e, max_pixels)) from e
    except _PIL_ERRORS as e:
        raise ImageError(_short_reason(e)) from e

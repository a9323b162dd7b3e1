"""File primitives of prune, group and undo: durable verified copies, moves that never overwrite, journaled
folder creation, and the checkpoint hook crash tests use to stop a run between two durable steps."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable

from dedup.actions.journal import Journal
from dedup.actions.paths import partial_name, within
from dedup.errors import ActionError
from dedup.images import open_regular
from dedup.report.files import fsync_folder

_CHUNK = 1 << 20

#: Called with the name of each durable step right after it: ``intent``, ``done`` (apply), ``copied``
#: (a cross-filesystem move's copy, before the source is unlinked), ``undo-intent``, ``undo-done``.
Checkpoint = Callable[[str], None]
_checkpoint: Checkpoint | None = None


def set_checkpoint(hook: Checkpoint | None) -> Checkpoint | None:
    """Install ``hook`` (None removes it) and return the previous one.

    The crash tests install a hook that SIGKILLs the process at the N-th step, to prove that a run killed
    at any point can be undone or resumed; nothing else needs it.
    """
    global _checkpoint
    previous, _checkpoint = _checkpoint, hook
    return previous


def checkpoint(step: str) -> None:
    """Report that ``step`` is durably done to the installed hook (no-op without one)."""
    if _checkpoint is not None:
        _checkpoint(step)


def sha256(path: str) -> str:
    """sha256 hex digest of a regular file's bytes (a FIFO or device is refused, never read)."""
    h = hashlib.sha256()
    with open_regular(path) as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def same_content(a: str, b: str) -> bool:
    """Two paths hold the same thing: equal link targets for symbolic links, else equal size + sha256."""
    la, lb = os.lstat(a), os.lstat(b)
    if stat.S_ISLNK(la.st_mode) or stat.S_ISLNK(lb.st_mode):
        return stat.S_ISLNK(la.st_mode) and stat.S_ISLNK(lb.st_mode) and os.readlink(a) == os.readlink(b)
    return la.st_size == lb.st_size and sha256(a) == sha256(b)


def place(tmp: str, dst: str) -> None:
    """Give the finished temporary file ``tmp`` its final name ``dst``, never replacing an existing file."""
    try:
        os.link(tmp, dst, follow_symlinks=False)
    except FileExistsError:
        os.unlink(tmp)
        raise
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if os.path.lexists(dst):  # filesystem without hard links: check, then rename
            raise FileExistsError(errno.EEXIST, "destination exists", dst) from e
        os.rename(tmp, dst)
        return
    os.unlink(tmp)


def copy_verified(src: str, dst: str) -> str:
    """Copy ``src`` (its content, following symbolic links) to the new file ``dst``, durably and verified.

    The data goes to a temporary name next to ``dst``, is fsynced, re-read and compared with the source
    (size and sha256), and only then appears under ``dst``.

    Returns:
        The sha256 hex digest of the copied content.
    """
    tmp = partial_name(dst)
    if os.path.lexists(tmp):
        os.unlink(tmp)
    h = hashlib.sha256()
    size = 0
    try:
        with open_regular(src) as fin, open(tmp, "xb") as fout:
            while chunk := fin.read(_CHUNK):
                h.update(chunk)
                size += len(chunk)
                fout.write(chunk)
            fout.flush()
            os.fsync(fout.fileno())
        st = os.stat(src)
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.chmod(tmp, stat.S_IMODE(st.st_mode))
        digest = h.hexdigest()
        if os.path.getsize(tmp) != size or sha256(tmp) != digest or st.st_size != size:
            raise ActionError(f"copy of {src} does not match the original (size or sha256); not used")
        place(tmp, dst)
    except BaseException:  # also a full disk half-way through: no partial file is left behind
        _discard(tmp)
        raise
    fsync_folder(os.path.dirname(dst))
    return digest


def _discard(tmp: str) -> None:
    """Remove a temporary file if it is there (quietly: this runs while another error is raised)."""
    try:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    except OSError:
        pass


def move(src: str, dst: str) -> str | None:
    """Move ``src`` (a symbolic link is moved as a link) to the new path ``dst``; never overwrites.

    Within a filesystem this is one ``os.rename``. Across filesystems: copy to a temporary name, fsync,
    verify size + sha256, give it its final name, then unlink the source.

    Returns:
        The sha256 of the content when it was copied across filesystems, else ``None``.
    """
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "destination exists", dst)
    try:
        os.rename(src, dst)
        return None
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
    if os.path.islink(src):
        tmp = partial_name(dst)
        if os.path.lexists(tmp):
            os.unlink(tmp)
        try:
            os.symlink(os.readlink(src), tmp)
            place(tmp, dst)
        except BaseException:
            _discard(tmp)
            raise
        digest = None
    else:
        digest = copy_verified(src, dst)
    checkpoint("copied")
    os.unlink(src)
    fsync_folder(os.path.dirname(src))
    return digest


def makedirs(path: str, journal: Journal | None, inside: str | None) -> list[str]:
    """Create ``path`` and missing parents; each new folder is journaled before it is made."""
    missing: list[str] = []
    p = path
    while not os.path.isdir(p):
        if os.path.lexists(p):
            raise NotADirectoryError(errno.ENOTDIR, "not a folder", p)
        missing.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    made = []
    for d in reversed(missing):
        if journal is not None and inside is not None and within(d, inside):
            journal.write({"type": "mkdir", "path": d})
        os.mkdir(d)
        made.append(d)
    return made


def describe(e: BaseException) -> str:
    if isinstance(e, OSError):
        reason = e.strerror or str(e)
        if isinstance(e, PermissionError):
            reason = "permission denied"
        elif isinstance(e, FileNotFoundError):
            reason = "vanished"
        return f"{reason}{f' ({e.filename})' if e.filename else ''}"
    return str(e)

"""Writing files so that a reader never sees half of one: `write_atomic` for a file, `atomic_folder` for a
folder (a checkpoint). An interrupted write (kernel interrupt, full disk) leaves the old file or folder as it
was and no temporary behind; a process killed outright (kill -9, power loss) may leave a `.NAME.tmp-*` folder
beside the target, but the target itself is always the old folder or the new one, whole.

Replacing a folder is one atomic swap on Linux (renameat2 with RENAME_EXCHANGE, on the filesystems that have
it); elsewhere it is two renames, and a crash between them leaves the old folder beside the target as
`.NAME.old-*` (gptviz.checkpoint's errors say how to restore it).

This module only writes; what goes into the files (checkpoints, pages, tokenizers) is their modules' job.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import PathExistsError


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write `data` (text as UTF-8, or bytes) to `path` through a temporary file and a rename; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; what we write is meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def fsync_path(path: Path) -> None:
    """Flush a file or folder to disk (a folder's fsync makes its renames durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot fsync a directory; the rename is still atomic
        pass
    finally:
        os.close(fd)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV, errno.EPERM}
_renameat2: list = []  # [function or None], looked up once


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not _renameat2:
        func = None
        if sys.platform.startswith("linux"):
            try:
                func = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
            except OSError:
                func = None
            if func is not None:
                func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
                func.restype = ctypes.c_int
        _renameat2.append(func)
    func = _renameat2[0]
    if func is None:
        return False
    if func(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in _UNSUPPORTED:  # an old kernel, or a filesystem without RENAME_EXCHANGE: the caller renames twice
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


@contextmanager
def atomic_folder(target: str | os.PathLike, check: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder beside `target`; when the block succeeds it replaces `target`.

    `check(target)` runs first and may raise to refuse replacing what is there (e.g. a folder that is not a
    checkpoint). A failure inside the block removes the temporary folder and leaves `target` untouched.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise PathExistsError(f"{target} is a file, not a folder. Choose another path.")
    if check is not None:
        check(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        for f in tmp.iterdir():
            os.chmod(f, 0o644)  # some writers create 0600 files; what we write is meant to be shared
            fsync_path(f)
        os.chmod(tmp, 0o755)
        fsync_path(tmp)
        if target.exists():
            if exchange(tmp, target):  # one step: target is the new folder, tmp now holds the old one
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                # Two renames: plain POSIX cannot swap folders. A crash between them leaves the old folder
                # intact beside the target as .<name>.old-*.
                old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
                os.rename(target, old)
                os.rename(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
        fsync_path(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

"""Writing files so that a reader never sees half of one: `write_atomic` for a file, `atomic_folder` for a
folder (a checkpoint). An interrupted write (kernel interrupt, full disk) leaves the old file or folder as it
was and no temporary behind.

This module only writes; what goes into the files (checkpoints, pages, tokenizers) is their modules' job.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


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


@contextmanager
def atomic_folder(target: str | os.PathLike, check: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder beside `target`; when the block succeeds it replaces `target`.

    `check(target)` runs first and may raise to refuse replacing what is there (e.g. a folder that is not a
    checkpoint). A failure inside the block removes the temporary folder and leaves `target` untouched.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} is a file, not a folder. Choose another path.")
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
            # Two renames, not one: POSIX cannot atomically swap folders. A crash between them leaves the old
            # folder intact beside the target as .<name>.old-*.
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

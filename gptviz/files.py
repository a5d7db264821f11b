"""Writing files so that a reader never sees half of one: `write_atomic` for a file, `atomic_folder` for a
folder (a checkpoint). An interrupted write (kernel interrupt, full disk) leaves the old file or folder as it
was and no temporary behind; a process killed outright (kill -9, power loss) may leave a `.NAME.tmp-*` file or
folder beside the target, but the target itself is always the old one or the new one, whole. The next
`write_atomic` / `atomic_folder` of the same target (and `gptviz.checkpoint.load`) removes such leftovers with
`remove_stale_temps`, once no live process can be writing them (the rule is in its docstring).

Replacing a folder is one atomic swap on Linux (renameat2 with RENAME_EXCHANGE, on the filesystems that have
it); elsewhere it is two renames, and a crash between them leaves the old folder beside the target as
`.NAME.old-*` (gptviz.checkpoint's errors say how to restore it).

This module only writes; what goes into the files (checkpoints, pages, tokenizers) is their modules' job.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import PathExistsError


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write `data` (text as UTF-8, or bytes) to `path` through a temporary file and a rename; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path))
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
    remove_stale_temps(target)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), dir=target.parent))
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


# ---- leftovers of killed writers ----------------------------------------------------------------------------
STALE_AFTER_S = 24 * 3600  # a temporary folder nobody touched for a day is abandoned, whoever wrote it
# what atomic_folder names its temporaries after ".NAME.tmp-": "<host tag>-<pid>-<random>", or (before pids were
# in the name) mkdtemp's 8 random characters; anything else beside the target is not ours and is never touched
_OURS = re.compile(r"(?:(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]+)-)?[a-z0-9_]{8}")


def _temp_prefix(target: Path) -> str:
    """The name says who writes it (host tag, pid), so a later write can tell a dead writer's leftover from a
    live one's; mkstemp/mkdtemp append 8 random characters."""
    return f".{target.name}.tmp-{_host_tag()}-{os.getpid()}-"


def _host_tag() -> str:
    """8 hex digits naming this machine, so a pid is only ever checked on the machine it belongs to."""
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there: leave it to the age rule
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists but belongs to someone else
        return True
    return True


def _last_touched(temp: Path) -> float:
    """The newest mtime of a file, or of a folder and the files in it (a live writer keeps creating files there)."""
    if not temp.is_dir():
        return temp.stat().st_mtime
    return max([temp.stat().st_mtime] + [f.stat().st_mtime for f in temp.iterdir()])


def remove_stale_temps(target: str | os.PathLike) -> list[Path]:
    """Remove the `.NAME.tmp-*` files and folders that killed writes of `target` left beside it; returns those
    removed.

    A temporary is stale when the process that wrote it is gone: its name carries this machine's tag and a
    pid that no longer runs here (a reused pid keeps it, until the next rule). Any of them, from another machine
    sharing the folder or from an older gptviz whose names had no pid, is also stale when nothing in it has
    changed for `STALE_AFTER_S` (a day), far longer than any save takes. A live writer's folder is never
    touched, and nothing else beside the target is (the `.NAME.old-*` folder a crash between two renames leaves
    is the only copy of the previous checkpoint: gptviz.checkpoint's errors say how to restore it). Never raises:
    a folder it cannot list or remove (read-only media) is left as it is.
    """
    target = Path(target)
    prefix = f".{target.name}.tmp-"
    try:
        candidates = [p for p in target.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return []
    removed = []
    for temp in candidates:
        match = _OURS.fullmatch(temp.name[len(prefix) :])
        if match is None or temp.is_symlink() or not (temp.is_dir() or temp.is_file()):
            continue
        try:
            dead = match["pid"] is not None and match["host"] == _host_tag() and not _process_alive(int(match["pid"]))
            stale = dead or time.time() - _last_touched(temp) > STALE_AFTER_S
            if stale and temp.is_dir():
                shutil.rmtree(temp, ignore_errors=True)
            elif stale:
                temp.unlink()
        except OSError:  # it vanished meanwhile (another cleaner), or cannot be read or removed
            continue
        if stale and not temp.exists():
            removed.append(temp)
    return removed

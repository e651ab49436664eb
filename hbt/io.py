"""Atomic writes: a crash never leaves a half-written file or directory over a good one.

A file is written to a temp file in its directory, flushed to disk (fsync), then renamed
over the old one (`os.replace`, atomic on POSIX): a reader sees the old file or the new one,
never a part. A directory is built in a staging dir beside it (named after the writing process, so that a
staging dir or temp file left by a killed writer is removed by the next writer of that path),
then swapped in with one
`renameat2(RENAME_EXCHANGE)` (Linux): there is no moment without a complete directory at
the path. Where that call is missing (another OS, an old kernel or libc, a file system
without it) the swap falls back to two renames, and the old directory, parked beside under
a recognisable name, is put back by the next `atomic_directory` on that path if a crash
came between them.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import json
import os
import shutil
import tempfile
from glob import escape as glob_escape
from pathlib import Path
from typing import Callable

from hbt.errors import HbtError

RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _unwritable(path: Path, error: OSError) -> HbtError:
    """A one-line error for a path that cannot be created, naming a parent that is a file."""
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    reason = f"{blocking} is a file" if blocking is not None else (error.strerror or str(error))
    return HbtError(f"{path}: cannot write there ({reason})")


def _scratch_prefix(final: Path) -> str:
    """The name prefix of this process's staging dirs and temp files for `final`."""
    return f".{final.name}.hbt-{os.getpid()}-"


def _remove_stale(final: Path) -> None:
    """Remove the staging dirs and temp files a killed writer of `final` left behind."""
    prefix = f".{final.name}.hbt-"
    for leftover in final.parent.glob(f"{glob_escape(prefix)}*"):
        pid = leftover.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (setting it to read it
    would briefly loosen files other threads create)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_file_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write `path` all or nothing: `write(tmp)` fills a temp file beside it, which replaces `path`.

    The temp file is fsynced, then `os.replace`d into place; on any error it is removed and
    `path` is left as it was. `write` gets the temp file's name (a parquet writer, `savefig`):
    give it the format, as the name ends in .tmp."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_scratch_prefix(path), suffix=".tmp")
        os.close(fd)
    except OSError as error:
        raise _unwritable(path, error) from None
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make outputs private to their writer
        with open(tmp, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (`write_file_atomic`)."""
    write_file_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(path: Path, data) -> None:
    """`data` as indented JSON, written atomically (`write_text_atomic`)."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def _renameat2():
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    function = getattr(libc, "renameat2", None)
    if function is not None:
        function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return function


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically; False when this system cannot (then nothing moved)."""
    function = _renameat2()
    if function is None:
        return False
    if function(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _parked(final: Path) -> Path:
    return final.with_name(f".{final.name}.previous")


def _restore_parked(final: Path) -> None:
    """Undo a two-rename swap that a crash cut between its renames."""
    parked = _parked(final)
    if parked.exists() and not final.exists():
        os.replace(parked, final)
    elif parked.exists():
        shutil.rmtree(parked, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(final: Path):
    """Yield a fresh staging directory beside `final`; on success it replaces `final` whole
    (module doc). On an exception the staging directory is removed and `final` is left as it was.
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        _restore_parked(final)
        _remove_stale(final)
        staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=_scratch_prefix(final)))
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp's 0700, as for files
    except OSError as error:
        raise _unwritable(final, error) from None
    if final.exists() and not final.is_dir():
        shutil.rmtree(staging, ignore_errors=True)
        raise HbtError(f"{final}: exists and is not a directory")
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not final.exists():
        os.replace(staging, final)
    elif exchange(staging, final):
        shutil.rmtree(staging, ignore_errors=True)  # it now holds the old directory
    else:
        parked = _parked(final)
        os.replace(final, parked)
        os.replace(staging, final)
        shutil.rmtree(parked, ignore_errors=True)
    _fsync_dir(final.parent)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    with open(path, "rb") as handle:
        return sha256_stream(handle, chunk)


def sha256_stream(stream, chunk: int = 1 << 20) -> str:
    """sha256 of what a binary stream (a file, a pyarrow input stream) reads to its end."""
    digest = hashlib.sha256()
    while block := stream.read(chunk):
        digest.update(block)
    return digest.hexdigest()


def is_local(location: str | Path) -> bool:
    """Whether `location` is on this machine: a path or a file:// URI (not s3://, gs://...)."""
    text = str(location)
    return "://" not in text or text.startswith("file://")


def absolute_location(location: str | Path) -> str:
    """A local path or file:// URI as an absolute path; any other URI (s3://, gs://...) as it is;
    no trailing slash. What pyarrow's `FileSystem.from_uri` and Ray's storage paths take."""
    text = str(location)
    if is_local(text):
        text = str(Path(text.removeprefix("file://")).resolve())
    return text.rstrip("/")

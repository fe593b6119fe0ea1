"""Files that are never half-written: a reader, or a run killed at any moment, sees the old
file or the new one, never a mix.

Every file is written to a temporary name beside it, flushed to disk (fsync) and renamed
over the old one (`atomic_file`); a folder is filled in a staging folder that then replaces
it in one rename (`atomic_directory`). Model files, dictionaries and adapters are saved so.
"""
import contextlib
import glob
import json
import os
import tempfile


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()  # temporary files are created 0600; finished ones get the usual mode


@contextlib.contextmanager
def atomic_file(path):
    """Yields a temporary path beside `path`; on success it is fsynced and renamed to `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~UMASK)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    _fsync(folder)


def atomic_directory(path, write):
    """`write(folder)` fills a staging folder that then replaces `path` (used only while
    nothing refers to `path` yet: its marker file is written after)."""
    import shutil

    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=parent)
    os.chmod(staging, 0o777 & ~UMASK)
    try:
        write(staging)
        for name in os.listdir(staging):
            _fsync(os.path.join(staging, name))
        _fsync(staging)
        old = None
        if os.path.isdir(path):  # set aside, not deleted first: the window is one rename
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=parent)
            os.replace(path, os.path.join(old, "previous"))
        os.replace(staging, path)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _fsync(parent)


def write_json(path, value, **kwargs):
    with atomic_file(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(value, f, **kwargs)
            f.write("\n")


def remove_stale_temporaries(path):
    """Temporary files a killed save left beside `path` (never the finished files)."""
    import shutil

    folder, base = os.path.split(os.path.abspath(path))
    for stale in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(base)}*.tmp")):
        if os.path.isdir(stale):
            shutil.rmtree(stale, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.remove(stale)


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

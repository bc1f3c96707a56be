"""Writing a file so that readers see the old version or the new one, never half of either.

Every file the project writes for others to read (index segments, ANN snapshots, hash layers,
exported models, stored photos, contact sheets, feature files) goes through this module: the data
is written to a temporary file in the same folder, optionally fsynced, then renamed over the target.
Temporary files are hidden (``.NAME.XXXX.tmp``), so folder scans never mistake one for data.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, durable: bool = False, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer that wants a file name (hnswlib, torch, h5py);
    when the block ends without an exception, the file written there replaces ``path``.

    ``durable`` also fsyncs the file and its folder, so the new version survives a power cut (the
    index's own files use it; caches and photos do not need it). Concurrent writers each get their
    own temporary file: the last rename wins and every version is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[BinaryIO], None], *,
                 durable: bool = False, mode: int = 0o644) -> Path:
    """Replace ``path`` with ``data``: bytes, text (UTF-8), or a function that writes to a binary file."""
    with atomic_path(path, durable=durable, mode=mode) as tmp, open(tmp, "wb") as fh:
        if callable(data):
            data(fh)
        else:
            fh.write(data.encode() if isinstance(data, str) else data)
    return Path(path)


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_temporary(name: str) -> bool:
    """True for a temporary file this module left behind (a writer that crashed before its rename)."""
    return name.startswith(".") and name.endswith(".tmp")

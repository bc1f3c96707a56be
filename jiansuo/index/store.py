"""The on-disk catalogue index: a folder that survives crashes and updates incrementally.

Layout of ``catalog.idx/``::

    index.sqlite        metadata (model, dimension, dtype, times) and one row per image:
                        id (path relative to the indexed folder), size, mtime, sha256, segment, row
    seg-<n>.npy         feature vectors, one file per committed batch ("segment")
    write.lock          held by the one process that writes at a time

Why this shape: every commit writes a *new* segment file (write, fsync, rename) and then records
its rows in one SQLite transaction. A crash before the transaction leaves an orphan file that the
next writer deletes; a crash after it leaves a complete commit. Readers never see half a batch,
an interrupted run resumes from its last commit, and adding one image never rewrites the others.
Removed or replaced rows are only forgotten in SQLite; :meth:`Index.compact` rewrites the segments
when enough dead rows pile up.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from ..atomic import atomic_write, is_temporary

FORMAT_VERSION = 1
DB_NAME = "index.sqlite"

# Ids per SQL statement (SQLite limits the number of parameters).
_SQL_CHUNK = 500
# Compact when dead rows exceed this share of all stored rows, or segments get this many.
_COMPACT_DEAD_SHARE = 0.3
_COMPACT_SEGMENTS = 64


class IndexError_(RuntimeError):
    """An index that cannot be opened or does not fit the request (missing, other model, ...)."""


@dataclass(frozen=True)
class ItemInfo:
    """What the index remembers about one image file, to tell whether it changed."""

    id: str
    size: int = 0
    mtime_ns: int = 0
    sha256: str = ""


class Index:
    """A catalogue index folder. Open with :meth:`open`, :meth:`create` or :meth:`open_or_create`."""

    def __init__(self, path: Path, db: sqlite3.Connection):
        self.path = path
        self._db = db
        self._lock = threading.RLock()
        self._cache_gen: int | None = None
        self._cache: tuple[list[str], np.ndarray] | None = None
        self._pos: tuple[list[str], dict[str, int]] | None = None
        self._ids: tuple[int, list[str]] | None = None
        self._len: tuple[int, int] | None = None
        self._maps: dict[str, np.ndarray] = {}
        meta = self.meta()
        if "model" not in meta or "dim" not in meta:
            # Another process is between creating the tables and writing their first rows.
            db.close()
            raise IndexError_(f"{path} is still being created or was left incomplete; try again")
        self.model: dict = json.loads(meta["model"])
        self.dim: int = int(meta["dim"])
        self.dtype = np.dtype(meta.get("dtype", "float32"))

    # ----------------------------------------------------------------- opening

    @staticmethod
    def exists(path: str | os.PathLike) -> bool:
        """True when ``path`` is an index folder."""
        return (Path(path) / DB_NAME).is_file()

    @classmethod
    def open(cls, path: str | os.PathLike) -> "Index":
        """Open an existing index; raises :class:`IndexError_` when there is none at ``path``."""
        path = Path(path)
        if not cls.exists(path):
            raise IndexError_(f"no index at {path} (build one with: jiansuo index PHOTOS/ --index {path})")
        return cls(path, _connect(path / DB_NAME))

    @classmethod
    def create(cls, path: str | os.PathLike, model: dict, *, dtype: str = "float32") -> "Index":
        """Create a new, empty index for vectors described by ``model`` (an extractor's ``describe()``)."""
        path = Path(path)
        if cls.exists(path):
            raise IndexError_(f"an index already exists at {path}")
        if np.dtype(dtype) not in (np.float32, np.float16):
            raise IndexError_(f"unsupported vector dtype {dtype!r}: use float32 or float16")
        path.mkdir(parents=True, exist_ok=True)
        db = _connect(path / DB_NAME, check=False)
        with db:
            db.executescript(_SCHEMA)
            now = _now()
            for key, value in {
                "format": str(FORMAT_VERSION), "model": json.dumps(model, sort_keys=True),
                "dim": str(int(model["dim"])), "dtype": np.dtype(dtype).name,
                "created": now, "updated": now, "generation": "0", "next_segment": "1",
            }.items():
                db.execute("INSERT INTO meta(key, value) VALUES (?, ?)", (key, value))
        return cls(path, db)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ----------------------------------------------------------------- metadata

    def meta(self) -> dict[str, str]:
        """All metadata keys (model, dim, dtype, created, updated, generation, and extras)."""
        with self._lock:
            return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def set_meta(self, key: str, value: str) -> None:
        """Store an extra metadata value (e.g. a trained hash layer's description)."""
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    @property
    def generation(self) -> int:
        """Increases with every commit; readers use it to notice changes made by other processes."""
        with self._lock:
            return int(self._db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])

    def __len__(self) -> int:
        with self._lock:
            # Counted once per generation: a count scans the table, the generation is one row.
            gen = self.generation
            if self._len is None or self._len[0] != gen:
                self._len = (gen, self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0])
            return self._len[1]

    def __contains__(self, item_id: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM items WHERE id=?", (item_id,)).fetchone() is not None

    def items(self) -> dict[str, ItemInfo]:
        """Every indexed image, by id."""
        with self._lock:
            rows = self._db.execute("SELECT id, size, mtime_ns, sha256 FROM items").fetchall()
        return {r[0]: ItemInfo(*r) for r in rows}

    def ids(self) -> list[str]:
        """Ids in the order of :meth:`vectors` rows (what a row mask refers to), without reading any vector."""
        with self._lock:
            gen = self.generation
            if self._cache is not None and self._cache_gen == gen:
                return self._cache[0]
            if self._ids is None or self._ids[0] != gen:
                snapshot_gen, ids, _segments, _rows = self.locations()
                self._ids = (snapshot_gen, ids)
            return self._ids[1]

    # ----------------------------------------------------------------- writing

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the index's write lock (one writer at a time, across processes)."""
        with self._lock, open(self.path / "write.lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def add(self, vectors: np.ndarray, infos: Sequence[ItemInfo]) -> None:
        """Add (or replace) images in one atomic commit. ``vectors`` must be L2-normalised, (n, dim)."""
        vectors = np.asarray(vectors)
        if len(infos) == 0:
            return
        if vectors.shape != (len(infos), self.dim):
            raise IndexError_(f"expected vectors of shape ({len(infos)}, {self.dim}), got {vectors.shape}")
        if not np.all(np.isfinite(vectors)):
            raise IndexError_("refusing to index non-finite feature values")
        ids = [i.id for i in infos]
        if len(set(ids)) != len(ids):
            raise IndexError_("duplicate ids in one batch")
        with self.writing():
            seg_no = int(self._meta_value("next_segment"))
            seg_name = f"seg-{seg_no:06d}.npy"
            _atomic_save_npy(self.path / seg_name, vectors.astype(self.dtype, copy=False))
            with self._db:
                self._db.execute("UPDATE meta SET value=? WHERE key='next_segment'", (str(seg_no + 1),))
                self._db.execute("INSERT INTO segments(name, rows) VALUES (?, ?)", (seg_name, len(ids)))
                self._db.executemany(
                    "INSERT OR REPLACE INTO items(id, size, mtime_ns, sha256, segment, row) VALUES (?,?,?,?,?,?)",
                    [(i.id, i.size, i.mtime_ns, i.sha256, seg_name, r) for r, i in enumerate(infos)],
                )
                self._bump()
            self._drop_unused_segments()
            self._maybe_compact()

    def remove(self, ids: Iterable[str]) -> int:
        """Forget these images (unknown ids are ignored); returns how many were removed."""
        ids = list(ids)
        if not ids:
            return 0
        with self.writing():
            with self._db:
                before = self._db.total_changes
                self._db.executemany("DELETE FROM items WHERE id=?", [(i,) for i in ids])
                removed = self._db.total_changes - before
                if removed:
                    self._bump()
            self._drop_unused_segments()
            self._maybe_compact()
        return removed

    def reset(self, model: dict) -> int:
        """Forget every image; from now on the index holds vectors of ``model``. Returns how many were forgotten.

        A new ``uuid`` tells derived data (the ANN graph) that this is no longer the index it was built for.
        """
        with self.writing():
            with self._db:
                removed = self._db.execute("DELETE FROM items").rowcount
                for key, value in {"model": json.dumps(model, sort_keys=True), "dim": str(int(model["dim"])),
                                   "uuid": uuid.uuid4().hex}.items():
                    self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))
                self._bump()
            self.model, self.dim = model, int(model["dim"])
            self._cache = None
            self._drop_unused_segments()
        return removed

    def compact(self) -> None:
        """Rewrite all live vectors into one segment, dropping dead rows."""
        with self.writing():
            self._compact_locked()

    # ----------------------------------------------------------------- reading

    def vectors(self) -> tuple[list[str], np.ndarray]:
        """(ids, matrix) of every live image, rows aligned. Cached until another commit happens."""
        with self._lock:
            if self._cache is not None and self._cache_gen == self.generation:
                return self._cache
            for attempt in range(3):
                gen, ids, segments, rows = self.locations()
                try:
                    matrix = np.empty((len(ids), self.dim), dtype=self.dtype)
                    start = 0
                    for seg, group in _group_by_segment(list(zip(ids, segments, rows))):
                        idx = np.fromiter((r[2] for r in group), dtype=np.int64, count=len(group))
                        matrix[start : start + len(group)] = self.segment(seg)[idx]
                        start += len(group)
                    break
                except FileNotFoundError:
                    # Another process compacted between our snapshot and the read: take a new snapshot.
                    if attempt == 2:
                        raise
            self._cache, self._cache_gen = (ids, matrix), gen
            return self._cache

    def locations(self) -> tuple[int, list[str], list[str], np.ndarray]:
        """(generation, ids, segment names, rows) of every live image, in :meth:`vectors` order.

        Read in one snapshot and without loading any vector, so a derived structure (the ANN graph)
        can tell what changed since it last looked and read only those vectors with :meth:`segment`.
        """
        with self._lock:
            self._db.execute("BEGIN")
            try:
                gen = int(self._meta_value("generation"))
                rows = self._db.execute("SELECT id, segment, row FROM items ORDER BY segment, row").fetchall()
            finally:
                self._db.execute("COMMIT")
            live = {r[1] for r in rows}
            for name in [n for n in self._maps if n not in live]:  # compacted away: let the kernel free it
                del self._maps[name]
        return gen, [r[0] for r in rows], [r[1] for r in rows], np.fromiter((r[2] for r in rows), np.int64, len(rows))

    def segment(self, name: str) -> np.ndarray:
        """Read-only memory map of one segment file named by :meth:`locations` (FileNotFoundError once compacted away).

        Maps are kept open (a segment never changes once written); one whose file is gone is dropped.
        """
        mm = self._maps.get(name)
        if mm is not None and not (self.path / name).exists():
            del self._maps[name]
            mm = None
        if mm is None:
            mm = self._maps[name] = np.load(self.path / name, mmap_mode="r")
        return mm

    def get_vectors(self, ids: Sequence[str]) -> np.ndarray:
        """Stored vectors of the given ids, in that order (KeyError for an unknown id).

        Read from the segment files' memory maps: a large index need not be loaded for a few vectors.
        """
        ids = list(ids)
        with self._lock:
            if self._cache is not None and self._cache_gen == self.generation:  # all in memory already
                pos = self.positions()
                return self._cache[1][[pos[i] for i in ids]]
        for attempt in range(3):
            with self._lock:
                found: dict[str, tuple[str, int]] = {}
                for start in range(0, len(ids), _SQL_CHUNK):
                    chunk = ids[start : start + _SQL_CHUNK]
                    marks = ",".join("?" * len(chunk))
                    found.update((i, (seg, row)) for i, seg, row in self._db.execute(
                        f"SELECT id, segment, row FROM items WHERE id IN ({marks})", chunk))
            missing = next((i for i in ids if i not in found), None)
            if missing is not None:
                raise KeyError(missing)
            out = np.empty((len(ids), self.dim), dtype=self.dtype)
            try:
                wanted = sorted(((n, *found[i]) for n, i in enumerate(ids)), key=lambda r: (r[1], r[2]))
                for seg, group in _group_by_segment(wanted):
                    where = np.fromiter((g[0] for g in group), np.int64, len(group))
                    rows = np.fromiter((g[2] for g in group), np.int64, len(group))
                    out[where] = self.segment(seg)[rows]
                return out
            except FileNotFoundError:
                if attempt == 2:  # compacted away between the lookup and the read, three times over
                    raise
        raise AssertionError("unreachable")

    def positions(self) -> dict[str, int]:
        """id → row of :meth:`ids` (cached per generation)."""
        with self._lock:
            ids = self.ids()
            if self._pos is None or self._pos[0] is not ids:
                self._pos = (ids, {i: n for n, i in enumerate(ids)})
            return self._pos[1]

    def stats(self) -> dict:
        """Counts and sizes for ``jiansuo info``."""
        meta = self.meta()
        with self._lock:
            seg_rows = self._db.execute("SELECT COALESCE(SUM(rows), 0), COUNT(*) FROM segments").fetchone()
        disk = sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())
        count = len(self)
        return {
            "path": str(self.path), "model": self.model, "dim": self.dim, "dtype": self.dtype.name,
            "images": count, "stored_rows": seg_rows[0], "segments": seg_rows[1],
            "bytes_on_disk": disk, "bytes_per_image_in_memory": self.dim * self.dtype.itemsize,
            "created": meta["created"], "updated": meta["updated"],
        }

    # ----------------------------------------------------------------- internals

    def _meta_value(self, key: str) -> str:
        return self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()[0]

    def _bump(self) -> None:
        self._db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key='generation'")
        self._db.execute("UPDATE meta SET value=? WHERE key='updated'", (_now(),))

    def _drop_unused_segments(self) -> None:
        """Delete segment files no live row points to, and files from commits that never finished."""
        with self._db:
            self._db.execute("DELETE FROM segments WHERE name NOT IN (SELECT DISTINCT segment FROM items)")
        known = {r[0] for r in self._db.execute("SELECT name FROM segments")}
        for f in self.path.iterdir():
            # Also the temporary file of a commit that crashed before its rename.
            if (f.name.startswith("seg-") and f.name not in known) or (f.name.startswith(".seg-") and is_temporary(f.name)):
                f.unlink(missing_ok=True)

    def _maybe_compact(self) -> None:
        stored, nseg = self._db.execute("SELECT COALESCE(SUM(rows), 0), COUNT(*) FROM segments").fetchone()
        live = self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        if nseg > _COMPACT_SEGMENTS or (stored and (stored - live) / stored > _COMPACT_DEAD_SHARE):
            self._compact_locked()

    def _compact_locked(self) -> None:
        self._cache = None
        ids, matrix = self.vectors()
        seg_no = int(self._meta_value("next_segment"))
        seg_name = f"seg-{seg_no:06d}.npy"
        _atomic_save_npy(self.path / seg_name, matrix)
        with self._db:
            self._db.execute("UPDATE meta SET value=? WHERE key='next_segment'", (str(seg_no + 1),))
            self._db.execute("INSERT INTO segments(name, rows) VALUES (?, ?)", (seg_name, len(ids)))
            self._db.executemany("UPDATE items SET segment=?, row=? WHERE id=?",
                                 [(seg_name, r, i) for r, i in enumerate(ids)])
            self._bump()
        self._drop_unused_segments()


_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE segments (name TEXT PRIMARY KEY, rows INTEGER NOT NULL);
CREATE TABLE items (
    id TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL,
    segment TEXT NOT NULL, row INTEGER NOT NULL
);
CREATE INDEX items_segment ON items(segment, row);
"""


def _connect(path: Path, check: bool = True) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=60, check_same_thread=False, isolation_level="DEFERRED")
    db.execute("PRAGMA journal_mode=WAL")  # readers (the site) never block the writer (an import)
    db.execute("PRAGMA synchronous=FULL")
    try:
        if check:
            db.execute("SELECT value FROM meta WHERE key='format'").fetchone()
    except sqlite3.DatabaseError as exc:
        db.close()
        raise IndexError_(f"{path} is not a readable jiansuo index ({exc})") from exc
    return db


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda fh: np.save(fh, np.ascontiguousarray(array)), durable=True)


def _group_by_segment(rows: list[tuple]) -> Iterator[tuple[str, list[tuple]]]:
    current, group = None, []
    for r in rows:
        if r[1] != current:
            if group:
                yield current, group
            current, group = r[1], []
        group.append(r)
    if group:
        yield current, group


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")

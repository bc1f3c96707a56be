"""The scale-out backend: vectors in a PostgreSQL table, searched by pgvector in SQL.

Tables (``jiansuo_vectors`` by default; the names take the ``table`` given)::

    jiansuo_vectors         one row per image: id, embedding halfvec(dim), and once a hash layer is
                            trained its 128-d projection (latent halfvec(128)) and 128-bit code (bit(128));
                            the file's size, mtime and sha256; an HNSW index on each vector column
    jiansuo_vectors_layers  trained hash layers (the newest is current)
    jiansuo_vectors_meta    the model the vectors came from, the storage type, when created

Any number of web processes and indexing workers on any number of machines share one store, and a
search is one SQL statement, so a restriction (``allowed``: ids, or an :class:`~.store.SqlRows` query
such as "photos of products in this category") runs inside it. Modes:

- ``exact``: every vector (allowed) is compared, as a sequential scan;
- ``ann``: the HNSW index of the features, ``ORDER BY embedding <=> query``; ``ef`` is
  ``hnsw.ef_search``, and ``hnsw.iterative_scan`` continues the scan until a restricted search has
  its ``k`` rows (pgvector 0.8);
- ``pca``: coarse to fine, as the folder's ANN does it: the HNSW index of the 128-d projection
  proposes ``candidates`` rows, the features re-rank them;
- ``hash``: coarse to fine by Hamming distance on the codes' HNSW index, re-ranked by the features.

``auto`` follows :mod:`.auto` (the vectors are float16, so exact up to 2,500 images, ``ann`` above).
``bench/ann.py`` and ``bench/site_load.py`` measure the modes.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
import uuid
from typing import Callable, Iterable, Sequence

import numpy as np

from ..hashing.codes import pack_bits, unpack_bits
from ..hashing.layer import HashLayer
from ..index.store import IndexError_, ItemInfo
from . import auto
from .base import Hit, Result
from .store import Allowed, SqlRows, VectorStore

DEFAULT_TABLE = "jiansuo_vectors"
#: Bits of the code column (and dimensions of the projection column).
CODE_BITS = 128
#: pgvector indexes halfvec up to this many dimensions; wider features are only searched exactly.
HNSW_MAX_DIM = 4000
#: pgvector refuses ef_search above this.
MAX_EF_SEARCH = 1000
#: hnsw.ef_search of ``ann`` searches (the speed/recall knob; 40 is pgvector's own default).
DEFAULT_EF = 40
#: Candidates the coarse step passes to the re-rank: measured by bench/ann.py for recall@10 ≈ 0.97
#: on a million vectors.
DEFAULT_CANDIDATES = {"pca": 64, "hash": 400}
MODES = ("exact", "ann", "pca", "hash")
# Ids per statement when looking rows up, and rows per INSERT batch.
_CHUNK = 1000
# How long a count of the rows may be reused to decide `auto` (other processes add rows too).
_COUNT_TTL = 10.0
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")


class PgVectorStore(VectorStore):
    """A :class:`VectorStore` in PostgreSQL (see the module docstring)."""

    kind = "pgvector"

    def __init__(self, connect: str | Callable[[], "object"], *, table: str = DEFAULT_TABLE):
        """``connect`` is a PostgreSQL URL, or a function returning a live psycopg connection (the
        site passes Django's, so the store joins the request's transaction)."""
        if not _NAME.match(table):
            raise ValueError(f"invalid table name {table!r}")
        self.table = table
        self._url = connect if isinstance(connect, str) else None
        self._connect = connect if callable(connect) else None
        self._own = None
        self._meta: dict[str, str] | None = None
        self._count: tuple[float, int] | None = None
        self._layer: tuple[int, HashLayer] | None = None
        self._layer_checked = 0.0
        self._session_options: dict[int, tuple[int, int]] = {}
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- opening

    @classmethod
    def open(cls, connect: str | Callable[[], "object"], *, model: dict | None = None,
             table: str = DEFAULT_TABLE, check: bool = True) -> "PgVectorStore":
        """The store in ``table``; with ``model``, its tables are created when missing and (``check``)
        checked otherwise."""
        store = cls(connect, table=table)
        if not store.exists():
            if model is None:
                raise IndexError_(f"no vector table {table!r} in {store._where()} (build one with: "
                                  f"jiansuo index PHOTOS/ --index postgresql://…)")
            store.create(model)
        elif model is not None and check:
            store.check_model(model)
        return store

    def exists(self) -> bool:
        """True when the store's tables exist and describe a model."""
        with self._cursor() as cur:
            cur.execute("SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL",
                        [self.table, f"{self.table}_meta"])
            if not cur.fetchone()[0]:
                return False
            cur.execute(f"SELECT count(*) FROM {self.table}_meta WHERE key = 'model'")
            return cur.fetchone()[0] == 1

    def create(self, model: dict) -> None:
        """Create the tables and indexes for vectors of ``model`` (idempotent)."""
        dim = int(model["dim"])
        t = self.table
        with self._transaction() as cur:
            cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
            cur.execute(f"CREATE TABLE IF NOT EXISTS {t}_meta (key text PRIMARY KEY, value text NOT NULL)")
            cur.execute(f"""CREATE TABLE IF NOT EXISTS {t}_layers (
                id bigserial PRIMARY KEY, created timestamptz NOT NULL DEFAULT now(), kind text NOT NULL,
                bits integer NOT NULL, fingerprint text NOT NULL, trained_on integer NOT NULL DEFAULT 0,
                data bytea NOT NULL)""")
            cur.execute(f"""CREATE TABLE IF NOT EXISTS {t} (
                id text PRIMARY KEY, embedding halfvec({dim}) NOT NULL, latent halfvec({CODE_BITS}),
                code bit({CODE_BITS}), layer_id bigint REFERENCES {t}_layers(id) ON DELETE SET NULL,
                size bigint NOT NULL DEFAULT 0, mtime_ns bigint NOT NULL DEFAULT 0,
                sha256 text NOT NULL DEFAULT '', updated timestamptz NOT NULL DEFAULT now())""")
            # Keep each feature inside its row: values over ~2 kB would otherwise move out of line
            # (TOAST), an extra lookup whenever a search re-ranks candidates.
            cur.execute(f"ALTER TABLE {t} ALTER COLUMN embedding SET STORAGE PLAIN")
            if dim <= HNSW_MAX_DIM:
                cur.execute(f"CREATE INDEX IF NOT EXISTS {t}_embedding_hnsw ON {t} "
                            "USING hnsw (embedding halfvec_cosine_ops) WITH (m = 16, ef_construction = 64)")
            cur.execute(f"CREATE INDEX IF NOT EXISTS {t}_latent_hnsw ON {t} "
                        "USING hnsw (latent halfvec_l2_ops) WITH (m = 16, ef_construction = 64)")
            cur.execute(f"CREATE INDEX IF NOT EXISTS {t}_code_hnsw ON {t} "
                        "USING hnsw (code bit_hamming_ops) WITH (m = 16, ef_construction = 64)")
            for key, value in {"model": json.dumps(model, sort_keys=True), "dtype": "float16",
                               "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "uuid": uuid.uuid4().hex}.items():
                cur.execute(f"INSERT INTO {t}_meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING",
                            [key, value])
        self._meta = None

    @contextlib.contextmanager
    def bulk_loading(self):
        """Load many rows faster: the HNSW indexes are dropped for the block and built once at its end
        (building an index over N rows costs far less than N inserts into it)."""
        with self._transaction() as cur:
            for column in ("embedding", "latent", "code"):
                cur.execute(f"DROP INDEX IF EXISTS {self.table}_{column}_hnsw")
        try:
            yield self
        finally:
            self.create(self.model)

    def drop(self) -> None:
        """Delete the store's tables (tests and benchmarks clean up with it)."""
        with self._transaction() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {self.table}, {self.table}_layers, {self.table}_meta")
        self._meta, self._layer, self._count, self._layer_checked = None, None, None, 0.0

    # ----------------------------------------------------------------- what it holds

    @property
    def location(self) -> str:
        return f"{self._where()} table {self.table}"

    @property
    def model(self) -> dict:
        return json.loads(self._read_meta()["model"])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float16)

    def meta(self) -> dict[str, str]:
        return dict(self._read_meta())

    def set_meta(self, key: str, value: str) -> None:
        with self._transaction() as cur:
            cur.execute(f"INSERT INTO {self.table}_meta (key, value) VALUES (%s, %s) "
                        "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", [key, value])
        self._meta = None

    def __len__(self) -> int:
        with self._cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {self.table}")
            n = int(cur.fetchone()[0])
        self._count = (time.monotonic(), n)
        return n

    def items(self) -> dict[str, ItemInfo]:
        with self._cursor() as cur:
            cur.execute(f"SELECT id, size, mtime_ns, sha256 FROM {self.table}")
            return {r[0]: ItemInfo(r[0], int(r[1]), int(r[2]), r[3]) for r in cur}

    def ids(self) -> list[str]:
        with self._cursor() as cur:
            cur.execute(f"SELECT id FROM {self.table} ORDER BY id")
            return [r[0] for r in cur]

    def contains(self, ids: Iterable[str]) -> set[str]:
        keys = list(dict.fromkeys(ids))
        found: set[str] = set()
        with self._cursor() as cur:
            for start in range(0, len(keys), _CHUNK):
                cur.execute(f"SELECT id FROM {self.table} WHERE id = ANY(%s)", [keys[start:start + _CHUNK]])
                found.update(r[0] for r in cur)
        return found

    def get(self, ids: Sequence[str]) -> np.ndarray:
        ids = list(ids)
        rows: dict[str, np.ndarray] = {}
        with self._cursor(binary=True) as cur:
            for start in range(0, len(ids), _CHUNK):
                cur.execute(f"SELECT id, embedding FROM {self.table} WHERE id = ANY(%s)", [ids[start:start + _CHUNK]],
                            binary=True)
                rows.update((r[0], r[1].to_numpy()) for r in cur)
        missing = next((i for i in ids if i not in rows), None)
        if missing is not None:
            raise KeyError(missing)
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        for n, i in enumerate(ids):
            out[n] = rows[i]
        return out

    def sample(self, n: int, *, seed: int = 0) -> np.ndarray:
        with self._cursor(binary=True) as cur:
            # A seeded order over a hash of the id: repeatable, and no sort of the whole table by random().
            cur.execute(f"SELECT embedding FROM {self.table} ORDER BY md5(id || %s) LIMIT %s", [str(seed), n],
                        binary=True)
            rows = [r[0].to_numpy() for r in cur]
        return np.stack(rows).astype(np.float32) if rows else np.zeros((0, self.dim), dtype=np.float32)

    # ----------------------------------------------------------------- changing it

    def add(self, infos: Sequence[ItemInfo], vectors: np.ndarray) -> None:
        from pgvector import HalfVector

        vectors = np.asarray(vectors, dtype=np.float32)
        if len(infos) == 0:
            return
        if vectors.shape != (len(infos), self.dim):
            raise IndexError_(f"expected vectors of shape ({len(infos)}, {self.dim}), got {vectors.shape}")
        if not np.all(np.isfinite(vectors)):
            raise IndexError_("refusing to store non-finite feature values")
        if len({i.id for i in infos}) != len(infos):
            raise IndexError_("duplicate ids in one batch")
        layer = self._current_layer(fresh=True)
        latents, codes = _encode(layer[1], vectors) if layer else ([None] * len(infos), [None] * len(infos))
        rows = [(i.id, HalfVector(v), lat, code, layer and layer[0], i.size, i.mtime_ns, i.sha256)
                for i, v, lat, code in zip(infos, vectors, latents, codes)]
        # An upsert: an image embedded twice (a retried task) keeps one row, the latest.
        sql = (f"INSERT INTO {self.table} (id, embedding, latent, code, layer_id, size, mtime_ns, sha256) "
               "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
               "embedding = EXCLUDED.embedding, latent = EXCLUDED.latent, code = EXCLUDED.code, "
               "layer_id = EXCLUDED.layer_id, size = EXCLUDED.size, mtime_ns = EXCLUDED.mtime_ns, "
               "sha256 = EXCLUDED.sha256, updated = now()")
        with self._transaction() as cur:
            for start in range(0, len(rows), _CHUNK):
                cur.executemany(sql, rows[start:start + _CHUNK])
        self._count = None

    def remove(self, ids: Iterable[str]) -> int:
        keys = list(dict.fromkeys(ids))
        removed = 0
        with self._transaction() as cur:
            for start in range(0, len(keys), _CHUNK):
                cur.execute(f"DELETE FROM {self.table} WHERE id = ANY(%s)", [keys[start:start + _CHUNK]])
                removed += cur.rowcount
        self._count = None
        return removed

    def reset(self, model: dict) -> int:
        removed = len(self)
        self.drop()
        self.create(model)
        return removed

    def maintain(self, *, progress: bool = False) -> None:
        """Code the rows written before the current hash layer was trained (or by an older one)."""
        self.recode(progress=progress)

    # ----------------------------------------------------------------- searching

    def resolve_mode(self, mode: str) -> str:
        if mode == "auto":
            if self._count is None or time.monotonic() - self._count[0] > _COUNT_TTL:
                len(self)
            return auto.resolve(mode, self._count[1], self.dtype)
        if mode not in MODES:
            raise ValueError(f"unknown search mode {mode!r}; choose one of: auto, {', '.join(MODES)}")
        return mode

    def search(self, queries: np.ndarray, k: int = 10, *, mode: str = "auto", allowed: Allowed = None,
               min_score: float | None = None, ef: int | None = None, candidates: int | None = None,
               **options) -> list[Result]:
        if options:
            raise ValueError(f"a PostgreSQL search does not take {', '.join(sorted(options))} "
                             "(it takes ef and candidates)")
        resolved = self.resolve_mode(mode)
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if resolved in ("pca", "hash") and self._current_layer() is None:
            raise IndexError_(f"--mode {resolved} needs a trained hash layer (jiansuo train-hash --unsupervised, "
                              "or python -m jiansuo.web train_hash)")
        where, params = _restriction(allowed)
        results = []
        for q in queries:
            if k <= 0:
                results.append(Result([], 0, resolved))
                continue
            rows, examined = self._nearest(resolved, q, k, where, params, ef, candidates)
            hits = [Hit(i, 1.0 - float(d)) for i, d in rows]
            if min_score is not None:
                hits = [h for h in hits if h.score >= min_score]
            results.append(Result(hits, examined, resolved))
        return results

    def _nearest(self, mode: str, query: np.ndarray, k: int, where: str, params: list,
                 ef: int | None, candidates: int | None) -> tuple[list[tuple[str, float]], int]:
        sql, named, ef, examined = self._statement(mode, query, k, where, params, ef, candidates)
        # Server-side binding: the query vector travels as binary, not as 1,280 numbers of text.
        with self._cursor(binary=True) as cur:
            self._search_options(cur.connection, cur, ef)
            cur.execute(sql, named)
            rows = cur.fetchall()
        if mode == "exact":
            examined = self._count[1] if self._count else len(self)
        # relaxed_order may return rows slightly out of order: sort the few there are.
        return sorted(rows, key=lambda r: (r[1], r[0])), examined

    def _statement(self, mode: str, query: np.ndarray, k: int, where: str, params: list,
                   ef: int | None, candidates: int | None) -> tuple[str, dict, int, int]:
        """(SQL, parameters, hnsw.ef_search, candidates examined) of one query's search."""
        from pgvector import HalfVector

        t = self.table
        named = {"q": HalfVector(query), "k": k, **{f"p{n}": v for n, v in enumerate(params)}}
        ef = min(MAX_EF_SEARCH, max(ef or DEFAULT_EF, k))
        if mode == "exact":
            # OFFSET 0 keeps the planner from turning the ORDER BY into a (approximate) index scan.
            return (f"SELECT id, d FROM (SELECT id, embedding <=> %(q)s AS d FROM {t} WHERE {_named(where)} "
                    "OFFSET 0) s ORDER BY d, id LIMIT %(k)s"), named, ef, 0
        if mode == "ann":
            return (f"SELECT id, embedding <=> %(q)s AS d FROM {t} WHERE {_named(where)} "
                    "ORDER BY embedding <=> %(q)s LIMIT %(k)s"), named, ef, ef
        layer_id, layer = self._current_layer()
        pool = max(candidates or DEFAULT_CANDIDATES[mode], k)
        latents, codes = _encode(layer, query[None, :])
        coarse = "latent <-> %(c)s" if mode == "pca" else "code <~> %(c)s"
        named.update(c=latents[0] if mode == "pca" else codes[0], layer=layer_id, pool=pool)
        return (f"SELECT id, embedding <=> %(q)s AS d FROM {t} WHERE id IN ("
                f"SELECT id FROM {t} WHERE layer_id = %(layer)s AND {_named(where)} "
                f"ORDER BY {coarse} LIMIT %(pool)s) ORDER BY d LIMIT %(k)s"), named, min(MAX_EF_SEARCH, max(ef, pool)), pool

    def explain(self, query: np.ndarray, k: int = 10, *, mode: str = "auto", allowed: Allowed = None,
                ef: int | None = None, candidates: int | None = None) -> str:
        """PostgreSQL's plan for one search (which indexes it walks), as ``EXPLAIN`` prints it."""
        resolved = self.resolve_mode(mode)
        where, params = _restriction(allowed)
        sql, named, ef, _ = self._statement(resolved, np.asarray(query, dtype=np.float32), k, where, params,
                                            ef, candidates)
        with self._cursor(binary=True) as cur:
            self._search_options(cur.connection, cur, ef)
            cur.execute("EXPLAIN " + sql, named)
            return "\n".join(r[0] for r in cur.fetchall())

    def _search_options(self, conn, cur, ef: int) -> None:
        """Enough of the HNSW graph for k rows after a restriction, and an iterative scan that goes on until
        a restricted search has them (pgvector 0.8). Inside the caller's transaction (Django's atomic), for
        that transaction (SET LOCAL); on an autocommit connection, for the session, once per value: a
        search is then a single round trip."""
        if not conn.autocommit:
            cur.execute("SELECT set_config('hnsw.ef_search', %s, true), "
                        "set_config('hnsw.iterative_scan', 'relaxed_order', true)", [str(ef)])
            return
        key = (conn.info.backend_pid, ef)
        if self._session_options.get(id(conn)) != key:
            cur.execute("SELECT set_config('hnsw.ef_search', %s, false), "
                        "set_config('hnsw.iterative_scan', 'relaxed_order', false)", [str(ef)])
            self._session_options[id(conn)] = key

    # ----------------------------------------------------------------- hash layer

    def _current_layer(self, *, fresh: bool = False) -> tuple[int, HashLayer] | None:
        """(id, layer) of the newest layer, or None. Looked up at most every few seconds (a layer trained
        by another process is seen that much later) unless ``fresh``; this process's own changes at once."""
        now = time.monotonic()
        if not fresh and now - self._layer_checked < _COUNT_TTL:
            return self._layer
        with self._cursor() as cur:
            cur.execute(f"SELECT max(id) FROM {self.table}_layers")
            newest = cur.fetchone()[0]
            if newest is None:
                self._layer = None
            elif self._layer is None or self._layer[0] != newest:
                cur.execute(f"SELECT data FROM {self.table}_layers WHERE id = %s", [newest])
                self._layer = (int(newest), HashLayer.from_bytes(bytes(cur.fetchone()[0])))
        self._layer_checked = now
        return self._layer

    def hash_layer(self) -> HashLayer | None:
        layer = self._current_layer()
        return layer[1] if layer else None

    def set_hash_layer(self, layer: HashLayer, *, progress: bool = False) -> int:
        if layer.bits != CODE_BITS:
            raise ValueError(f"the PostgreSQL code column holds {CODE_BITS} bits, not {layer.bits}")
        if layer.input_dim != self.dim:
            raise ValueError(f"hash layer expects {layer.input_dim}-d features but the store holds {self.dim}-d")
        with self._transaction() as cur:
            cur.execute(f"INSERT INTO {self.table}_layers (kind, bits, fingerprint, trained_on, data) "
                        "VALUES (%s, %s, %s, %s, %s)",
                        [layer.kind, layer.bits, layer.fingerprint(), int(layer.info.get("trained_on", 0)),
                         layer.to_bytes()])
        return self.recode(progress=progress)

    def recode(self, *, batch: int = 2000, progress: bool = False) -> int:
        """Compute projection and code of the rows not coded with the newest layer; returns how many."""

        current = self._current_layer(fresh=True)
        if current is None:
            return 0
        layer_id, layer = current
        done = 0
        while True:
            with self._cursor() as cur:
                cur.execute(f"SELECT id, embedding FROM {self.table} WHERE layer_id IS DISTINCT FROM %s "
                            "ORDER BY id LIMIT %s", [layer_id, batch])
                stale = cur.fetchall()
            if not stale:
                return done
            latents, codes = _encode(layer, np.stack([r[1].to_numpy() for r in stale]).astype(np.float32))
            with self._transaction() as cur:
                cur.executemany(f"UPDATE {self.table} SET latent = %s, code = %s, layer_id = %s WHERE id = %s",
                                [(lat, c, layer_id, r[0]) for r, lat, c in zip(stale, latents, codes)])
            done += len(stale)
            if progress:
                print(f"  coded {done} images", flush=True)

    # ----------------------------------------------------------------- the rest

    def stats(self) -> dict:
        meta = self._read_meta()
        with self._cursor() as cur:
            cur.execute(f"SELECT count(*), count(layer_id), pg_total_relation_size(%s) FROM {self.table}",
                        [self.table])
            count, coded, size = cur.fetchone()
        layer = self._current_layer(fresh=True)
        dim = self.dim
        return {
            "kind": self.kind, "path": self.location, "model": self.model, "dim": dim, "dtype": "float16",
            "images": int(count), "coded_images": int(coded), "bytes_on_disk": int(size),
            "bytes_per_image_in_memory": dim * 2, "created": meta.get("created", ""), "updated": "",
            "hash": None if layer is None else {"kind": layer[1].kind, "bits": layer[1].bits,
                                                "fingerprint": layer[1].fingerprint()},
            "ann": {"engine": "pgvector HNSW", "M": 16} if dim <= HNSW_MAX_DIM else None,
            "auto_mode": auto.resolve("auto", int(count), self.dtype), "ann_threshold": auto.ann_threshold(self.dtype),
            "notes": [f"hash layer: {layer[1].kind} {layer[1].bits} bits, {coded} of {count} images coded"
                      if layer else "hash layer: none (modes pca and hash need one: jiansuo train-hash --unsupervised)"],
        }

    def close(self) -> None:
        if self._own is not None:
            self._own.close()
            self._own = None

    # ----------------------------------------------------------------- connections

    def _conn(self):
        """A live psycopg connection with pgvector's types registered."""
        if self._connect is not None:
            conn = self._connect()
        else:
            with self._lock:
                if self._own is None or self._own.closed:
                    import psycopg

                    self._own = psycopg.connect(self._url, autocommit=True)
                conn = self._own
        if conn.adapters.types.get("halfvec") is None:
            from pgvector.psycopg import register_vector

            with contextlib.suppress(Exception):  # the extension is created by create(); register then
                register_vector(conn)
        return conn

    @contextlib.contextmanager
    def _cursor(self, binary: bool = False):
        """A cursor. ``binary`` gives one with server-side binding, whose ``execute(..., binary=True)`` returns
        binary results: vectors then load with one buffer copy instead of having their text parsed (the
        site's Django connection makes client-side-binding cursors, which cannot)."""
        conn = self._conn()
        if binary:
            import psycopg

            with psycopg.Cursor(conn) as cur:
                yield cur
            return
        with conn.cursor() as cur:
            yield cur

    @contextlib.contextmanager
    def _transaction(self):
        """A cursor inside a transaction: our own in autocommit mode, else the caller's (Django's atomic)."""
        conn = self._conn()
        block = conn.transaction() if conn.autocommit else contextlib.nullcontext()
        with block, conn.cursor() as cur:
            yield cur

    def _read_meta(self) -> dict[str, str]:
        if self._meta is None:
            with self._cursor() as cur:
                cur.execute(f"SELECT key, value FROM {self.table}_meta")
                self._meta = dict(cur.fetchall())
            if "model" not in self._meta:
                raise IndexError_(f"{self.location} has no model description (is it a jiansuo vector table?)")
        return self._meta

    def _where(self) -> str:
        if self._url:
            return re.sub(r"//[^@/]*@", "//", self._url)  # no password in messages
        return "the site's database"


# ------------------------------------------------------------------ helpers


def _restriction(allowed: Allowed) -> tuple[str, list]:
    """``allowed`` as an SQL condition on ``id`` with its parameters (``%s`` style)."""
    if allowed is None:
        return "TRUE", []
    if isinstance(allowed, SqlRows):
        return f"id IN ({allowed.sql})", list(allowed.params)
    if isinstance(allowed, np.ndarray) and allowed.dtype == bool:
        raise TypeError("a PostgreSQL store has no row order for a mask: restrict the search with ids or SqlRows")
    return "id = ANY(%s)", [list(allowed)]


def _named(where: str) -> str:
    """A ``%s`` condition rewritten with the ``%(pN)s`` names used beside other named parameters."""
    parts = where.split("%s")
    return "".join(p + (f"%(p{n})s" if n < len(parts) - 1 else "") for n, p in enumerate(parts))


def _encode(layer: HashLayer, vectors: np.ndarray) -> tuple[list, list[str]]:
    """The layer's projections of ``vectors`` (halfvec) and their codes (as '0101…' bit strings)."""
    from pgvector import HalfVector

    latent = layer.latent(vectors).astype(np.float32)
    bits = unpack_bits(pack_bits(latent > 0), layer.bits)
    return [HalfVector(v) for v in latent], ["".join("1" if b else "0" for b in row) for row in bits]

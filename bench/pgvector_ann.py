"""The pgvector rows of bench/ann.py: the same vectors in PostgreSQL, searched as the site searches them.

    # normally run by bench/ann.py; alone, on an index bench/ann.py has written:
    nice -n 10 .venv/bin/python bench/pgvector_ann.py /tmp/jiansuo-bench/ann-100000

Into a scratch database on the server of scripts/services.sh (``$JIANSUO_TEST_DATABASE_URL``),
laid out as the site's ``catalog_photofeature`` table:

1. the index's float16 vectors are bulk-loaded into ``halfvec(1280)`` (stored inline, ``STORAGE
   PLAIN``) with ``COPY ... (FORMAT BINARY)``, the rows built with NumPy, together with each
   vector's 128-d projection (``halfvec(128)``) and 128-bit code (``bit(128)``) from an ITQ layer
   (:func:`jiansuo.hashing.itq.train_itq` on a 20,000-vector sample), as ``train_hash`` makes them;
2. the three HNSW indexes are built as the site's migration declares them (m=16,
   ef_construction=64; ``halfvec_cosine_ops``, ``halfvec_l2_ops``, ``bit_hamming_ops``) with
   ``maintenance_work_mem`` large enough for the graph and one parallel maintenance worker (2 cores);
3. the site's three query shapes (``JIANSUO_PG_SEARCH``), as prepared statements over a local TCP
   connection: ``hnsw`` (the feature's HNSW, per ``hnsw.ef_search``), ``pca`` and ``hash`` (coarse
   step on the projection or the code for C candidates, re-ranked by the feature, per C). Timed one
   query at a time and 100 at once (psycopg's pipeline mode); CPU = the client's plus the server
   backend's CPU time over all queries, per query.

Recall@10 is against exact search of the same float16 vectors (the caller's ground truth).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DB_NAME = "jiansuo_bench_ann"
DIM = 1280
LATENT = 128  # the site's CODE_BITS: projection dimensions and code bits
M, EF_CONSTRUCTION = 16, 64  # as jiansuo/web/catalog/models.py declares the site's indexes
CHUNK = 20_000
_HEADER = b"PGCOPY\n\xff\r\n\x00" + np.array([0, 0], dtype=">i4").tobytes()
_TRAILER = np.array([-1], dtype=">i2").tobytes()
_ROW = np.dtype([("nfields", ">i2"), ("len_id", ">i4"), ("id", ">i4"),
                 ("len_vec", ">i4"), ("dim", ">u2"), ("unused", ">u2"), ("vec", ">f2", (DIM,)),
                 ("len_lat", ">i4"), ("ldim", ">u2"), ("lunused", ">u2"), ("lat", ">f2", (LATENT,)),
                 ("len_code", ">i4"), ("nbits", ">i4"), ("code", "u1", (LATENT // 8,))])
INDEXES = {"embedding": "halfvec_cosine_ops", "latent": "halfvec_l2_ops", "code": "bit_hamming_ops"}
QUERIES = {
    "hnsw": "SELECT id FROM bench_ann ORDER BY embedding <=> %(v)s LIMIT 10",
    "pca": "SELECT id FROM (SELECT id, embedding FROM bench_ann ORDER BY latent <-> %(l)s LIMIT {c}) AS candidates "
           "ORDER BY embedding <=> %(v)s LIMIT 10",
    "hash": "SELECT id FROM (SELECT id, embedding FROM bench_ann ORDER BY code <~> %(b)s LIMIT {c}) AS candidates "
            "ORDER BY embedding <=> %(v)s LIMIT 10",
}
LABELS = {"hnsw": "pgvector `hnsw`: HNSW on halfvec(1280), ef_search={p}",
          "pca": "pgvector `pca`: HNSW on the 128-d projection, {p} candidates re-ranked",
          "hash": "pgvector `hash`: HNSW on bit(128) codes (Hamming), {p} candidates re-ranked"}


def copy_rows(ids: np.ndarray, vectors: np.ndarray, latents: np.ndarray, codes: np.ndarray) -> bytes:
    """Binary COPY rows (id int4, embedding halfvec, latent halfvec, code bit), built in one NumPy array."""
    rows = np.zeros(len(ids), dtype=_ROW)
    rows["nfields"] = 4
    rows["len_id"] = 4
    rows["id"] = ids
    rows["len_vec"] = 4 + 2 * DIM
    rows["dim"] = DIM
    rows["vec"] = vectors
    rows["len_lat"] = 4 + 2 * LATENT
    rows["ldim"] = LATENT
    rows["lat"] = latents
    rows["len_code"] = 4 + LATENT // 8
    rows["nbits"] = LATENT
    rows["code"] = codes
    return rows.tobytes()


def connect(url: str, **kwargs):
    import psycopg
    from pgvector.psycopg import register_vector

    conn = psycopg.connect(url, autocommit=True, **kwargs)
    register_vector(conn)
    return conn


def scratch_database(server_url: str) -> str:
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME}")
        conn.execute(f"CREATE DATABASE {DB_NAME}")
    url = server_url.rsplit("/", 1)[0] + "/" + DB_NAME
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return url


def _segments(index_path: Path, pick: np.ndarray | None = None):
    """Yield (positions, float16 vectors) of the index's live vectors (``pick``: only those positions)."""
    from jiansuo.index import Index

    with Index.open(index_path) as index:
        _, ids, segs, rows = index.locations()
        pick = np.arange(len(ids)) if pick is None else pick
        names = np.array(segs)[pick]
        for name in dict.fromkeys(names):
            where = pick[names == name]
            seg = index.segment(name)
            for s in range(0, len(where), CHUNK):
                part = where[s : s + CHUNK]
                yield part, np.asarray(seg[rows[part]], dtype=np.float16)


def index_ids(index_path: Path) -> list[str]:
    from jiansuo.index import Index

    with Index.open(index_path) as index:
        return index.locations()[1]


def sample(index_path: Path, n: int) -> np.ndarray:
    """A seeded random sample of ``n`` stored vectors (float32)."""
    total = len(index_ids(index_path))
    pick = np.sort(np.random.default_rng(0).choice(total, min(n, total), replace=False))
    return np.concatenate([v.astype(np.float32) for _, v in _segments(index_path, pick)])


def load(conn, index_path: Path, layer) -> float:
    """COPY every live vector of the index (and its projection and code) into ``bench_ann``; returns seconds."""
    from jiansuo.hashing.codes import pack_bits

    conn.execute("DROP TABLE IF EXISTS bench_ann")
    conn.execute(f"CREATE TABLE bench_ann (id int4 PRIMARY KEY, embedding halfvec({DIM}) NOT NULL, "
                 f"latent halfvec({LATENT}), code bit({LATENT}))")
    # 2.5 kB vectors would otherwise go to TOAST, out of line: keep them in the row (as the site's migration does).
    conn.execute("ALTER TABLE bench_ann ALTER COLUMN embedding SET STORAGE PLAIN")
    total = len(index_ids(index_path))
    t0 = time.perf_counter()
    done = 0
    sql = "COPY bench_ann (id, embedding, latent, code) FROM STDIN (FORMAT BINARY)"
    with conn.cursor() as cur, cur.copy(sql) as copy:
        copy.write(_HEADER)
        for part, vecs in _segments(index_path):
            latent = layer.latent(vecs.astype(np.float32))
            copy.write(copy_rows(part.astype(np.int32), vecs, latent.astype(np.float16), pack_bits(latent > 0)))
            done += len(part)
            print(f"  copied {done:,} / {total:,}", file=sys.stderr, end="\r")
        copy.write(_TRAILER)
    print(file=sys.stderr)
    conn.execute("VACUUM ANALYZE bench_ann")
    return time.perf_counter() - t0


def build(conn, column: str, memory: str) -> float:
    conn.execute(f"SET maintenance_work_mem = '{memory}'")
    conn.execute("SET max_parallel_maintenance_workers = 1")
    t0 = time.perf_counter()
    conn.execute(f"CREATE INDEX bench_ann_{column}_hnsw ON bench_ann USING hnsw ({column} {INDEXES[column]}) "
                 f"WITH (m = {M}, ef_construction = {EF_CONSTRUCTION})")
    return time.perf_counter() - t0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a local process (the server backend serving this connection)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_queries(conn, sql: str, params: list[dict], batch: int = 100) -> dict:
    """Ids per query and timings: median/mean ms one at a time, CPU ms per query, ms per pipelined batch."""
    backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    hits, lat = [], []
    cpu0, server0 = time.process_time(), _cpu_seconds(backend)
    with conn.cursor() as cur:
        for p in params:
            t = time.perf_counter()
            cur.execute(sql, p, prepare=True)
            rows = cur.fetchall()
            lat.append(time.perf_counter() - t)
            hits.append([r[0] for r in rows])
    cpu = (time.process_time() - cpu0 + _cpu_seconds(backend) - server0) / len(params)
    batches = []
    for start in range(0, min(len(params), 3 * batch), batch):
        t = time.perf_counter()
        with conn.pipeline():
            curs = [conn.execute(sql, p, prepare=True) for p in params[start : start + batch]]
        for c in curs:
            c.fetchall()
        batches.append(time.perf_counter() - t)
    return {"hits": hits, "single_ms": 1000 * float(np.median(lat)), "single_mean_ms": 1000 * float(np.mean(lat)),
            "single_cpu_ms": 1000 * cpu, "batch100_ms": 1000 * float(np.median(batches))}


def sizes(conn) -> dict[str, float]:
    names = ["bench_ann"] + [f"bench_ann_{c}_hnsw" for c in INDEXES]
    return {n: conn.execute("SELECT coalesce(pg_relation_size(to_regclass(%s)), 0)", (n,)).fetchone()[0] / 2**20
            for n in names}


def pgvector_rows(index_path: Path, queries: np.ndarray, truth_ids: list[list[str]], *, server_url: str | None,
                  efs=(40, 64, 100, 160), pca=(32, 64, 100, 160), hashing=(200, 400, 800), memory: str = "6GB",
                  full: bool = True) -> tuple[list[dict], list[str]]:
    """Rows for bench/ann.py's table, and notes for its text (why there are none, sizes, set-up)."""
    from pgvector import Bit, HalfVector

    from jiansuo.hashing.codes import pack_bits
    from jiansuo.hashing.itq import train_itq

    if not server_url:
        return [], ["pgvector: not measured (JIANSUO_TEST_DATABASE_URL unset: run scripts/services.sh and "
                    "`source var/services.env`)."]
    url = scratch_database(server_url)
    layer = train_itq(sample(index_path, 20_000), LATENT)
    ids = index_ids(index_path)
    with connect(url) as conn:
        print("pgvector: COPY binary...", file=sys.stderr)
        load_s = load(conn, index_path, layer)
        built = {}
        for column in INDEXES if full else ("latent", "code"):
            print(f"  building the HNSW index on {column}...", file=sys.stderr)
            built[column] = build(conn, column, memory)
            print(f"  {built[column]:.1f} s", file=sys.stderr)
        mib = sizes(conn)
        latents = layer.latent(queries).astype(np.float32)
        params = [{"v": HalfVector(q.astype(np.float32)), "l": HalfVector(lat),
                   "b": Bit(np.unpackbits(c)[:LATENT].astype(bool))}
                  for q, lat, c in zip(queries, latents, pack_bits(latents > 0))]
        runs = [("pca", c, max(40, c)) for c in pca] + [("hash", c, min(1000, c)) for c in hashing]
        if full:
            runs = [("hnsw", ef, ef) for ef in efs] + runs
        for mode in dict.fromkeys(m for m, _, _ in runs):  # warm each index's pages into memory
            last = [r for r in runs if r[0] == mode][-1]
            conn.execute(f"SET hnsw.ef_search = {last[2]}")
            timed_queries(conn, QUERIES[mode].format(c=last[1]), params)
        rows = []
        for mode, p, ef in runs:
            conn.execute(f"SET hnsw.ef_search = {ef}")
            t = timed_queries(conn, QUERIES[mode].format(c=p), params)
            column = {"hnsw": "embedding", "pca": "latent", "hash": "code"}[mode]
            memory_mib = mib[f"bench_ann_{column}_hnsw"] + (mib["bench_ann"] if mode != "hnsw" else 0)
            rows.append({"system": LABELS[mode].format(p=p), "build_s": load_s + built[column],
                         "memory_mib": memory_mib, "recall": _recall(t.pop("hits"), ids, truth_ids), **t})
            print(f"  {rows[-1]['system']}: {t['single_ms']:.2f} ms, recall {rows[-1]['recall']:.3f}", file=sys.stderr)
        version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
        server = conn.execute("SHOW server_version").fetchone()[0].split()[0]
        shared = conn.execute("SHOW shared_buffers").fetchone()[0]
    builds = ", ".join(f"{c} {s:.0f} s" for c, s in built.items())
    notes = [
        "",
        f"pgvector: {version} on PostgreSQL {server} (shared_buffers {shared}; the rest is served from the OS page "
        f"cache), the site's table layout in a scratch database, queries as prepared statements over a local TCP "
        f"connection (so each includes a client/server round trip), batch = 100 queries in psycopg's pipeline mode, "
        f"CPU = client plus server backend. Bulk load: COPY binary of {len(ids):,} rows (halfvec(1280) inline, its "
        f"128-d ITQ projection and 128-bit code) in {load_s:.0f} s. HNSW m={M}, ef_construction={EF_CONSTRUCTION}, "
        f"maintenance_work_mem {memory}, 1 parallel maintenance worker: {builds} (the build column adds the load). "
        f"Sizes: table {mib['bench_ann']:.0f} MiB; HNSW on the feature "
        f"{mib['bench_ann_embedding_hnsw']:.0f} MiB, on the projection {mib['bench_ann_latent_hnsw']:.0f} MiB, on the "
        f"codes {mib['bench_ann_code_hnsw']:.0f} MiB. Memory column = what must stay cached: the index, plus for "
        f"`pca` and `hash` the table, whose vectors re-rank the candidates. Every query shape ran once over all "
        f"queries before it was timed.",
    ]
    return rows, notes


def _recall(hits: list[list[int]], ids: list[str], truth_ids: list[list[str]]) -> float:
    return float(np.mean([len({ids[i] for i in h} & set(t)) / 10 for h, t in zip(hits, truth_ids)]))


def exact_truth(index_path: Path, queries: np.ndarray, k: int = 10) -> list[list[str]]:
    """Exact top-k ids per query, scanning the stored vectors block by block."""
    ids = index_ids(index_path)
    best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), k), dtype=np.int64)
    for part, vecs in _segments(index_path):
        sims = queries @ vecs.astype(np.float32).T
        s = np.concatenate([best_s, sims], axis=1)
        i = np.concatenate([best_i, np.broadcast_to(part, sims.shape)], axis=1)
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(s, top, axis=1), np.take_along_axis(i, top, axis=1)
    order = np.argsort(-best_s, axis=1)
    return [[ids[j] for j in row] for row in np.take_along_axis(best_i, order, axis=1)]


def main() -> None:
    """Standalone: measure on an index bench/ann.py has written (exact ground truth computed here)."""
    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("index", type=Path)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--memory", default="6GB")
    p.add_argument("--no-full", action="store_true", help="skip the (slow to build) HNSW index on the full feature")
    args = p.parse_args()
    queries = np.load(args.index / "bench-queries.npy")[: args.queries]
    truth = exact_truth(args.index, queries)
    rows, notes = pgvector_rows(args.index, queries, truth, server_url=os.environ.get("JIANSUO_TEST_DATABASE_URL"),
                                memory=args.memory, full=not args.no_full)
    for r in rows:
        print(f"| {r['system']} | {r['build_s']:.1f} | {r['memory_mib']:.0f} | {r['single_ms']:.2f} | "
              f"{r['single_mean_ms']:.2f} | {r['single_cpu_ms']:.2f} | {r['batch100_ms']:.1f} | {r['recall']:.3f} |")
    print("\n".join(notes))


if __name__ == "__main__":
    main()

"""Approximate search at a million images: embedded ANN index vs the original system's exact search.

    nice -n 10 .venv/bin/python bench/ann.py                 # 1,000,000 vectors (the issue's figure)
    nice -n 10 .venv/bin/python bench/ann.py --size 100000   # quick run

Data that behave like real features: real EfficientNet-Lite0 embeddings of the 60,000 Fashion-MNIST
training images (cached by bench/hashing.py), each copied with Gaussian noise drawn from the real
features' own covariance and re-normalised. The noise scale is calibrated so that a copy is as
similar to its source as a real image is to its nearest real neighbour (median cosine), so the
neighbourhoods are as dense as real ones and uniformly random vectors (useless for ANN) are avoided.
Queries are real, held-out embeddings (the Fashion-MNIST test split).

Rows, side by side in one run on this machine (2 cores):
  * exact, the original system's way: float32 matrix in RAM, ``numpy.dot`` then ``argsort``;
  * jiansuo's embedded ANN (``--mode ann``): a float16 index on disk, HNSW (hnswlib) over a 128-d
    PCA projection, candidates re-ranked with the exact stored vectors; one row per ``ef``;
  * pgvector: the same vectors in the site's PostgreSQL table, its three query shapes (bench/pgvector_ann.py).
Recall@10 is measured against exact full-dimension search of the same stored vectors. Build time
and memory of the ANN index are measured in fresh child processes (peak RSS, and the growth of RSS
when the graph is loaded). The section between the markers in bench/RESULTS.md is rewritten.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from hashing import CACHE_DIR, fashion_features  # noqa: E402  (the cached real embeddings)
from results_md import write_section  # noqa: E402  (bench/ is on sys.path when run as a script)

RESULTS = ROOT / "bench" / "RESULTS.md"
MODEL = "efficientnet-lite0"
NOISE_RANK = 256  # principal directions that shape the noise; the rest of the variance is spread evenly
CHUNK = 50_000


# --------------------------------------------------------------------------- data


def calibrate_noise(base: np.ndarray, rng: np.random.Generator) -> tuple[float, dict]:
    """Noise scale s whose copies sit as close to their source as real images sit to their nearest neighbour."""
    sample = base[rng.choice(len(base), 1000, replace=False)]
    sims = sample @ base.T
    sims[sims > 0.99999] = -1  # the sample itself
    target = float(np.median(sims.max(axis=1)))
    noise = NoiseModel(base)
    lo, hi = 0.0, 3.0
    src = base[rng.choice(len(base), 2000, replace=False)]
    for _ in range(20):
        mid = (lo + hi) / 2
        copies = noise.perturb(src, mid, rng)
        if float(np.median(np.sum(copies * src, axis=1))) > target:
            lo = mid
        else:
            hi = mid
    s = (lo + hi) / 2
    return s, {"target_median_nn_cosine": round(target, 4), "noise_scale": round(s, 4)}


class NoiseModel:
    """Gaussian noise with the real features' covariance (top principal directions + even residual)."""

    def __init__(self, base: np.ndarray):
        centred = base - base.mean(axis=0)
        _, sing, vt = np.linalg.svd(centred[:: max(1, len(base) // 20000)], full_matrices=False)
        n = len(centred[:: max(1, len(base) // 20000)])
        var = sing**2 / n
        self.basis = (np.sqrt(var[:NOISE_RANK])[:, None] * vt[:NOISE_RANK]).astype(np.float32)
        self.residual = float(np.sqrt(var[NOISE_RANK:].sum() / base.shape[1]))

    def perturb(self, x: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
        z = rng.standard_normal((len(x), self.basis.shape[0]), dtype=np.float32)
        e = rng.standard_normal(x.shape, dtype=np.float32)
        v = x + scale * (z @ self.basis + self.residual * e)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def make_index(path: Path, size: int, base: np.ndarray, seed: int) -> dict:
    """Write ``size`` synthetic vectors into a float16 jiansuo index at ``path`` (reused when already there)."""
    from jiansuo.features import model_class
    from jiansuo.index import Index, ItemInfo

    recipe = {"size": size, "seed": seed, "base": len(base), "noise_rank": NOISE_RANK, "version": 1}
    stamp = path / "bench-recipe.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("recipe") == recipe:
        return json.loads(stamp.read_text())["calibration"]
    if path.exists():
        import shutil

        shutil.rmtree(path)
    rng = np.random.default_rng(seed)
    scale, calibration = calibrate_noise(base, rng)
    noise = NoiseModel(base)
    t0 = time.perf_counter()
    with Index.create(path, model_class(MODEL).description(), dtype="float16") as index:
        for start in range(0, size, CHUNK):
            m = min(CHUNK, size - start)
            src = rng.integers(0, len(base), m)
            vecs = noise.perturb(base[src], scale, rng)
            index.add(vecs, [ItemInfo(f"synthetic/{start + i:07d}.jpg") for i in range(m)])
            print(f"  wrote {start + m:,} / {size:,} vectors", file=sys.stderr, end="\r")
    print(file=sys.stderr)
    calibration["write_seconds"] = round(time.perf_counter() - t0, 1)
    stamp.write_text(json.dumps({"recipe": recipe, "calibration": calibration}))
    return calibration


def full_matrix(path: Path) -> tuple[list[str], np.ndarray]:
    """The index's vectors as one float32 matrix, as the original system holds them (read segment by segment)."""
    from jiansuo.index import Index

    with Index.open(path) as index:
        _, ids, segs, rows = index.locations()
        out = np.empty((len(ids), index.dim), dtype=np.float32)
        names = np.array(segs)
        for name in dict.fromkeys(segs):
            where = np.flatnonzero(names == name)
            out[where] = index.segment(name)[rows[where]]
    return ids, out


# --------------------------------------------------------------------------- child processes


def rss_mib(field: str = "RssAnon") -> float:
    """A /proc/self/status figure in MiB: RssAnon (memory the process owns, not the file pages it maps),
    RssFile, or VmHWM (peak resident since exec; ru_maxrss would carry the parent's)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def child_build(path: str) -> None:
    """Build the ANN graph from scratch and save it; prints JSON (seconds, peak RSS)."""
    import shutil

    from jiansuo.index import Index, ann_store

    with Index.open(path) as index:
        shutil.rmtree(ann_store.ann_dir(index), ignore_errors=True)
        before = rss_mib()
        t0 = time.perf_counter()
        graph = ann_store.ensure(index, persist=True, progress=True)
        seconds = time.perf_counter() - t0
        print(json.dumps({"build_seconds": seconds, "rss_before_mib": before, "rss_after_mib": rss_mib(),
                          "peak_rss_mib": rss_mib("VmHWM"),
                          "graph_dim": graph.dim, "alive": graph.alive}))


def child_serve(path: str, queries_file: str, efs: str, candidates: int) -> None:
    """Load the saved graph, answer the queries per ef; prints JSON (latencies, hits, memory)."""
    from jiansuo.index import Index, ann_store
    from jiansuo.search.ann import AnnSearcher

    queries = np.load(queries_file)
    with Index.open(path) as index:
        before = rss_mib()
        t0 = time.perf_counter()
        graph = ann_store.ensure(index, persist=False)
        load_s = time.perf_counter() - t0
        loaded = rss_mib()
        out = {"load_seconds": load_s, "rss_before_mib": before, "rss_loaded_mib": loaded, "runs": []}
        for ef in map(int, efs.split(",")):
            searcher = AnnSearcher(index, ef=ef, candidates=candidates)
            searcher.search(queries[:5], 10)  # warm the memory maps' first pages
            lat, cpu, hits = [], [], []
            for q in queries:
                t, c = time.perf_counter(), time.thread_time()
                r = searcher.search(q[None, :], 10)[0]
                lat.append(time.perf_counter() - t)
                cpu.append(time.thread_time() - c)  # one query runs in this thread: immune to waiting for a core
                hits.append([h.id for h in r.hits])
            batch = []
            for start in range(0, min(len(queries), 300), 100):
                t = time.perf_counter()
                searcher.search(queries[start : start + 100], 10)
                batch.append(time.perf_counter() - t)
            out["runs"].append({"ef": ef, "candidates": candidates, "single_ms": 1000 * float(np.median(lat)),
                                "single_mean_ms": 1000 * float(np.mean(lat)), "single_cpu_ms": 1000 * float(np.mean(cpu)),
                                "single_p95_ms": 1000 * float(np.percentile(lat, 95)),
                                "batch100_ms": 1000 * float(np.median(batch)), "hits": hits})
        out["rss_after_queries_mib"] = rss_mib()
        out["rss_file_after_queries_mib"] = rss_mib("RssFile")
        out["peak_rss_mib"] = rss_mib("VmHWM")
        out["graph_alive"] = graph.alive
        print(json.dumps(out))


def run_child(*args: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- exact, the original way


def exact_original(matrix: np.ndarray, queries: np.ndarray, singles: int) -> dict:
    """The original system's query: ``scores = np.dot(queryVec, feats.T)`` then ``np.argsort(scores)[::-1]``."""
    lat, cpu = [], []
    for q in queries[:singles]:
        t, c = time.perf_counter(), time.process_time()
        scores = np.dot(q, matrix.T)
        rank = np.argsort(scores)[::-1][:10]
        lat.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)  # all threads: the matrix product uses both cores
    t = time.perf_counter()
    scores = np.dot(queries[:100], matrix.T)
    rank = np.argsort(scores, axis=1)[:, ::-1][:, :10]
    batch = time.perf_counter() - t
    del scores, rank
    return {"single_ms": 1000 * float(np.median(lat)), "single_mean_ms": 1000 * float(np.mean(lat)),
            "single_cpu_ms": 1000 * float(np.mean(cpu)), "batch100_ms": 1000 * batch}


def ground_truth(matrix: np.ndarray, queries: np.ndarray, k: int = 10) -> np.ndarray:
    """Exact top-k row numbers per query (blocked matrix product + partial sort)."""
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), 50):
        sims = queries[start : start + 50] @ matrix.T
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1)
        out[start : start + 50] = np.take_along_axis(part, order, axis=1)
    return out


# --------------------------------------------------------------------------- pgvector (later step)


def pgvector_rows(args, index_path: Path, queries: np.ndarray, truth_ids: list[list[str]]) -> tuple[list[dict], list[str]]:
    """The same vectors in PostgreSQL + pgvector as the site stores and searches them (bench/pgvector_ann.py):
    rows shaped like the embedded ones, and notes for the text. Needs the server of scripts/services.sh
    (``$JIANSUO_TEST_DATABASE_URL``); without it, no rows and a note saying so.
    """
    from pgvector_ann import pgvector_rows as measure

    return measure(index_path, queries, truth_ids, server_url=os.environ.get("JIANSUO_TEST_DATABASE_URL"))


# --------------------------------------------------------------------------- report


def recall_at_10(hits: list[list[str]], truth_ids: list[list[str]]) -> float:
    return float(np.mean([len(set(h) & set(t)) / 10 for h, t in zip(hits, truth_ids)]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=1_000_000, help="vectors in the catalogue (default 1,000,000)")
    p.add_argument("--queries", type=int, default=500, help="real held-out queries for recall (default 500)")
    p.add_argument("--singles", type=int, default=20, help="single queries timed for exact search (slow)")
    p.add_argument("--ef", default="64,96,128,160,192", help="ANN beam widths to measure")
    p.add_argument("--candidates", type=int, default=None, help="candidates re-ranked exactly (default: the product's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=None, help=f"where the index is kept (default {CACHE_DIR}/ann-SIZE)")
    p.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    p.add_argument("--_child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._child:
        kind, *rest = args._child
        child_build(*rest) if kind == "build" else child_serve(rest[0], rest[1], rest[2], int(rest[3]))
        return

    from jiansuo.index import ann_store
    from jiansuo.search.ann import DEFAULT_CANDIDATES, DEFAULT_EF

    candidates = args.candidates or DEFAULT_CANDIDATES
    load_start = os.getloadavg()
    path = args.workdir or CACHE_DIR / f"ann-{args.size}"
    print(f"real features: Fashion-MNIST embeddings ({MODEL}), cached in {CACHE_DIR}", file=sys.stderr)
    base, _ = fashion_features("train", MODEL)
    test, test_labels = fashion_features("test", MODEL)
    from jiansuo.datasets.fashion_mnist import query_sample

    queries = np.ascontiguousarray(test[query_sample(test_labels, per_class=max(1, args.queries // 10), seed=args.seed)])
    print(f"catalogue: {args.size:,} vectors in {path}", file=sys.stderr)
    calibration = make_index(path, args.size, base, args.seed)
    queries_file = path / "bench-queries.npy"
    np.save(queries_file, queries)

    print("building the ANN graph (child process)...", file=sys.stderr)
    build = run_child("--_child", "build", str(path))
    print(f"  {build['build_seconds']:.1f} s", file=sys.stderr)
    print("serving queries from the saved graph (child process)...", file=sys.stderr)
    serve = run_child("--_child", "serve", str(path), str(queries_file), args.ef, str(candidates))

    print("exact search, the original system's way...", file=sys.stderr)
    t0 = time.perf_counter()
    ids, matrix = full_matrix(path)
    load_exact = time.perf_counter() - t0
    original = exact_original(matrix, queries, args.singles)
    truth = ground_truth(matrix, queries)
    truth_ids = [[ids[i] for i in row] for row in truth]
    del matrix
    pg_rows, pg_notes = pgvector_rows(args, path, queries, truth_ids)
    load_end = os.getloadavg()

    graph_mib = serve["rss_loaded_mib"] - serve["rss_before_mib"]
    rows = [{
        "system": "exact, original way (float32 in RAM, numpy.dot + argsort)", "build_s": load_exact,
        "memory_mib": args.size * 1280 * 4 / 2**20, "recall": 1.0,
        **{k: original[k] for k in ("single_ms", "single_mean_ms", "single_cpu_ms", "batch100_ms")},
    }]
    for run in serve["runs"]:
        rows.append({
            "system": f"jiansuo ANN, ef={run['ef']}" + (" (default)" if run["ef"] == DEFAULT_EF else ""),
            "build_s": build["build_seconds"], "memory_mib": graph_mib, "recall": recall_at_10(run["hits"], truth_ids),
            **{k: run[k] for k in ("single_ms", "single_mean_ms", "single_cpu_ms", "batch100_ms")},
        })
    rows.extend(pg_rows)

    lines = [
        f"## Approximate search at {args.size:,} images (`bench/ann.py`)",
        "",
        f"Command: `nice -n 10 .venv/bin/python bench/ann.py --size {args.size}` "
        f"({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores shared with other jobs: "
        f"load average {load_start[0]:.1f} at start, {load_end[0]:.1f} at end, so timings are noisy).",
        "",
        f"Catalogue: {args.size:,} vectors, 1280-d, stored float16, derived from the real {MODEL} embeddings of the "
        f"{len(base):,} Fashion-MNIST training images (noise with the features' own covariance, scale "
        f"{calibration['noise_scale']} so a copy's median cosine to its source equals the real median nearest-"
        f"neighbour cosine, {calibration['target_median_nn_cosine']}). Queries: {len(queries)} real held-out test "
        f"embeddings. Recall@10 against exact full-dimension search of the stored vectors.",
        "",
        "| system | build (s) | memory (MiB) | 1 query, median (ms) | 1 query, mean (ms) | 1 query, CPU (ms) "
        "| batch of 100 (ms) | recall@10 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['system']} | {r['build_s']:.1f} | {r['memory_mib']:.0f} | {r['single_ms']:.2f} | "
                     f"{r['single_mean_ms']:.2f} | {r['single_cpu_ms']:.2f} | {r['batch100_ms']:.1f} | {r['recall']:.3f} |")
    if not pg_rows:
        lines.append("| pgvector HNSW | (filled in by the PostgreSQL step) | | | | | | |")
    lines += [
        "",
        f"ANN: hnswlib HNSW (M={ann_store.DEFAULT_M}, ef_construction={ann_store.DEFAULT_EF_CONSTRUCTION}) over a "
        f"{build['graph_dim']}-d uncentred PCA projection, {candidates} candidates re-ranked with the exact "
        f"float16-stored vectors read through memory maps; the build ran in a fresh process (peak RSS "
        f"{build['peak_rss_mib']:.0f} MiB). ANN memory = growth of the serving process's own (anonymous) memory when "
        f"the saved graph is loaded ({serve['load_seconds']:.1f} s to load); after all queries it held "
        f"{serve['rss_after_queries_mib']:.0f} MiB of its own plus {serve['rss_file_after_queries_mib']:.0f} MiB of "
        f"mapped index file pages (page cache the kernel can drop). Exact 'build' = reading the float32 matrix into "
        f"RAM, its memory = the matrix. '1 query' = one query image's vector in, 10 results out; CPU = CPU time of "
        f"that query (for exact, of both cores), which waiting for a busy core does not inflate. "
        f"On disk: {sum(f.stat().st_size for f in path.glob('seg-*.npy')) / 2**20:.0f} MiB of float16 vectors + "
        f"{sum(f.stat().st_size for f in (path / 'ann').iterdir()) / 2**20:.0f} MiB of ANN graph.",
        *pg_notes,
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("ann", text)
        print(f"\nwritten to {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()

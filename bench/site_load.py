"""The site under load and at scale: ``python -m jiansuo.web serve`` against its ceilings and today's paths.

    .venv/bin/python bench/site_load.py             # both parts: 50 clients x 60 s, then 100,000 products
    .venv/bin/python bench/site_load.py --quick     # 20 s of load, 20,000 products
    .venv/bin/python bench/site_load.py --only load|scale [--databases sqlite,postgres]

**Load.** A demo catalogue (2,000 Fashion-MNIST product photos, ``jiansuo.demo``) imported into a
scratch site; ``wrk`` (Debian's package) keeps 50 connections busy for 60 s posting real photos
(12 JPEGs, 800x800: crops of scikit-image's photos and Fashion-MNIST products, ``bench/extract.py
make_jpegs``), one after another, to ``/api/search``; its Lua script rotates the bodies. Rows: ``serve``
as shipped (query photos of concurrent requests share network calls), ``serve`` with one network
call per request (``JIANSUO_EMBED_BATCH=1``), and ``runserver`` (what the demo served with before).
Beside them, measured in this process on the same photos: the model's embedding throughput at
batch 1, the network alone (the ceiling the issue names) and with decoding and preprocessing.

**Scale.** P products, one photo each, their vectors synthetic but shaped like real ones (the
catalogue's real embeddings copied with noise of their own covariance, as bench/ann.py does;
10 categories, prices 10-2,000); the queries are the real photos above. One client posts them one
at a time (keep-alive) to ``serve`` and times each answer end to end: unfiltered, filtered by a
category (a tenth of the catalogue) and by a price range (about a third), searched as shipped
(``auto``: the store's ANN index) and as the site searched before (``exact``: every vector), on
SQLite with the index folder and on PostgreSQL with pgvector. The machine should be idle.

The section ``<!-- bench/site_load -->`` of bench/RESULTS.md is rewritten with the tables.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from results_md import write_section  # noqa: E402  (bench/ is on sys.path when run as a script)
from sites import free_port, manage, scratch_database, site_env, start_server, stop  # noqa: E402

CACHE = Path(os.environ.get("JIANSUO_BENCH_CACHE", Path.home() / ".cache" / "jiansuo" / "bench-site"))
BOUNDARY = "jiansuo-bench-boundary"
CATEGORIES = [f"category-{n}" for n in range(10)]
SCALE_DB = "jiansuo_bench_scale"
#: API rates high enough that the throttle never answers for the server.
UNTHROTTLED = {"JIANSUO_PUBLIC_SEARCH": "1", "JIANSUO_API_ANON_RATE": "100000000/min",
               "JIANSUO_API_USER_RATE": "100000000/min", "JIANSUO_SERVE_FILES": "1"}


# --------------------------------------------------------------------------- photos and bodies


def query_photos(folder: Path, n: int = 12) -> list[Path]:
    from extract import make_jpegs

    return make_jpegs(folder, n, seed=7)


def multipart(photo: bytes, fields: dict[str, str]) -> bytes:
    parts = [f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="q.jpg"\r\n'
                 f"Content-Type: image/jpeg\r\n\r\n".encode() + photo + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


# --------------------------------------------------------------------------- the ceiling


def ceiling(photos: list[Path], seconds: float = 8.0) -> dict:
    """Embedding throughput at batch 1 in this process, network alone and with decode + preprocess."""
    from jiansuo.features import get_extractor
    from jiansuo.pipeline import decode_for

    extractor = get_extractor()
    data = [p.read_bytes() for p in photos]
    tensors = [extractor.preprocess(decode_for(extractor, d))[None] for d in data]
    out = {}
    for name, step in (("network", lambda i: extractor.embed_batch(tensors[i])),
                       ("decode+network", lambda i: extractor.embed_batch(
                           extractor.preprocess(decode_for(extractor, data[i]))[None]))):
        step(0)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            step(n % len(data))
            n += 1
        out[name] = n / (time.perf_counter() - start)
    return out


# --------------------------------------------------------------------------- load


def model_key() -> str:
    """The default model's description (name, version, preprocessing, precision): a cached site of another
    is rebuilt."""
    from jiansuo.features import model_class

    cls = model_class("efficientnet-lite0")
    return json.dumps(cls.description(cls.default_precision), sort_keys=True)


def load_site(items: int) -> Path:
    """A site with the demo catalogue of ``items`` products, imported once and kept in the bench cache."""
    from jiansuo.demo import build_catalogue

    site = CACHE / f"load-{items}"
    env = site_env(site / "site", **UNTHROTTLED)
    stamp = site / "ready"
    if stamp.is_file():
        manage(env, "migrate", "-v", "0")   # a site cached by an older version of the code
    if stamp.is_file() and stamp.read_text() != model_key():
        print("the cached load site has vectors of an older model: embedding them again...", file=sys.stderr)
        manage(env, "sync_index", "--rebuild", "--no-progress")
        stamp.write_text(model_key())
    if not stamp.is_file():
        shutil.rmtree(site, ignore_errors=True)
        catalogue = build_catalogue(site / "catalogue", items)
        print(f"importing {items} demo products...", file=sys.stderr)
        manage(env, "migrate", "-v", "0")
        manage(env, "import_catalog", str(catalogue), "--no-progress")
        stamp.write_text(model_key())
    return site


def wrk_script(bodies: list[Path], folder: Path) -> Path:
    files = ", ".join(json.dumps(str(b)) for b in bodies)
    script = folder / "search.lua"
    script.write_text(f"""
local bodies = {{}}
for i, path in ipairs({{{files}}}) do
  local f = assert(io.open(path, "rb")); bodies[i] = f:read("*all"); f:close()
end
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "multipart/form-data; boundary={BOUNDARY}"
request = function()
  n = n % #bodies + 1
  return wrk.format(nil, "/api/search", nil, bodies[n])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('JSON{{"requests": %d, "seconds": %f, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50_ms": %f, "p99_ms": %f, "mean_ms": %f}}\\n', summary.requests,
    summary.duration / 1e6, e.connect, e.read, e.write, e.status, e.timeout, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, latency.mean / 1000))
end
""")
    return script


def warm(port: int, body: bytes, n: int = 6) -> None:
    for _ in range(n):
        status, _ = post(port, body)
        if status != 200:
            raise RuntimeError(f"warm-up search answered {status}")


def post(port: int, body: bytes, conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", "/api/search", body=body,
                     headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        if own:
            conn.close()


def run_load(label: str, server_args: list[str], env: dict, script: Path, warm_body: bytes, args, work: Path) -> dict:
    port = free_port()
    argv = [a.replace("PORT", str(port)) for a in server_args]
    print(f"load: {label} ({args.clients} clients, {args.seconds} s)...", file=sys.stderr)
    proc = start_server(env, argv, work / f"{label.split()[0]}-{port}.log", port)
    try:
        warm(port, warm_body)
        load0 = os.getloadavg()[0]
        out = subprocess.run(["wrk", "-t1", f"-c{args.clients}", f"-d{args.seconds}s", "--timeout", "60s",
                              "-s", str(script), f"http://127.0.0.1:{port}/api/search"],
                             capture_output=True, text=True, timeout=args.seconds + 120)
    finally:
        stop(proc)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("JSON")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out.stdout}\n{out.stderr}")
    r = json.loads(line[4:])
    r.update(label=label, rate=r["requests"] / r["seconds"], load=load0,
             errors=r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"])
    print(f"  {r['rate']:.1f} req/s, p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms, {r['errors']} errors",
          file=sys.stderr)
    return r


def load_part(args, work: Path, photos: list[Path]) -> list[str]:
    site = load_site(args.items)
    env = site_env(site / "site", **UNTHROTTLED)
    bodies = []
    for n, p in enumerate(photos):
        bodies.append(work / f"body-{n}.bin")
        bodies[-1].write_bytes(multipart(p.read_bytes(), {"k": "10", "min_score": "-1"}))
    script = wrk_script(bodies, work)
    warm_body = bodies[0].read_bytes()
    top = ceiling(photos)
    print(f"ceiling: network {top['network']:.1f}/s, decode+network {top['decode+network']:.1f}/s", file=sys.stderr)
    serve = ["serve", "--bind", "127.0.0.1:PORT", "--no-collectstatic"]
    rows = [run_load("serve (as shipped: waiting photos share a network call)", serve, env, script, warm_body,
                     args, work),
            run_load("serve, a 2 ms window to gather photos", serve, {**env, "JIANSUO_EMBED_WAIT_MS": "2"}, script,
                     warm_body, args, work),
            run_load("serve, one network call per request", serve, {**env, "JIANSUO_EMBED_BATCH": "1"}, script,
                     warm_body, args, work),
            run_load("runserver (the demo before)", ["runserver", "127.0.0.1:PORT", "--noreload"], env, script,
                     warm_body, args, work)]
    after = ceiling(photos)
    net = (top["network"] + after["network"]) / 2
    full = (top["decode+network"] + after["decode+network"]) / 2
    lines = [
        f"### Load: {args.clients} clients for {args.seconds} s against `/api/search` ({args.items:,} products)",
        "",
        f"Ceilings, measured in this process on the same photos at batch 1, before and after the rows (mean): "
        f"the network alone **{net:.1f} images/s** ({top['network']:.1f} / {after['network']:.1f}; "
        f"efficientnet-lite0, ONNX Runtime on {os.cpu_count()} threads), and embedding the photo files "
        f"(decoding, framing, preprocessing, network) **{full:.1f}/s** ({top['decode+network']:.1f} / "
        f"{after['decode+network']:.1f}).",
        "",
        "| server | requests/s | of the network alone | of embedding the photos | p50 (ms) | p99 (ms) | errors "
        "| load average at start |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        detail = (f"{r['errors']} (connect {r['connect']}, read {r['read']}, write {r['write']}, "
                  f"status {r['status']}, timeout {r['timeout']})" if r["errors"] else "0")
        lines.append(f"| {r['label']} | {r['rate']:.1f} | {r['rate'] / net:.0%} | {r['rate'] / full:.0%} | "
                     f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {detail} | {r['load']:.1f} |")
    lines += ["", f"Shared network calls (`JIANSUO_EMBED_BATCH=8`) against one call per request: "
              f"{rows[0]['rate'] / rows[2]['rate']:.2f}x the requests with no wait (the default), "
              f"{rows[1]['rate'] / rows[2]['rate']:.2f}x with a 2 ms window. `serve` ran {os.cpu_count()} worker "
              f"processes x 8 threads (ONNX Runtime on 1 thread each); wrk (1 thread) ran on the same "
              f"{os.cpu_count()} cores. Each request also decodes its 800x800 JPEG, frames and preprocesses it, "
              "parses the multipart body, ranks (two searches) and reads the products from the database."]
    return lines


# --------------------------------------------------------------------------- scale


def scale_site(db: str, products: int, base: np.ndarray, pg_server: str | None) -> tuple[Path, dict]:
    """A site of ``products`` synthetic products on ``db`` (sqlite or postgres), built once and cached."""
    site = CACHE / f"scale-{db}-{products}"
    db_url = None
    if db == "postgres":
        db_url = pg_server.rsplit("/", 1)[0] + "/" + SCALE_DB
    env = site_env(site / "site", db_url, **UNTHROTTLED)
    stamp = site / "ready"
    if stamp.is_file() and stamp.read_text() == model_key() and (db != "postgres" or _database_exists(pg_server, SCALE_DB)):
        manage(env, "migrate", "-v", "0")   # a site cached by an older version of the code
        return site, env
    shutil.rmtree(site, ignore_errors=True)
    (site / "site").mkdir(parents=True)
    if db == "postgres":
        scratch_database(pg_server, SCALE_DB)
    manage(env, "migrate", "-v", "0")
    np.save(site / "base.npy", base)
    print(f"scale: building {products:,} products on {db}...", file=sys.stderr)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--child-build", str(site / "base.npy"), str(products)], env=env,
                   check=True)
    print(f"  built in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    stamp.write_text(model_key())
    return site, env


def _database_exists(server: str, name: str) -> bool:
    import psycopg

    with psycopg.connect(server, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None


def child_build(base_file: str, products: int) -> None:
    """In the scale site's environment: the products and their photos' vectors, then the ANN index."""
    import django

    django.setup()
    from jiansuo.web.catalog.search import get_store

    base = np.load(base_file)
    rng = np.random.default_rng(0)
    store = get_store()
    # On PostgreSQL, the HNSW indexes are built once after the rows are in, as a large import should.
    loading = store.bulk_loading() if store.kind == "pgvector" else contextlib.nullcontext()
    with loading:
        _add_products(store, products, base, rng)
    store.maintain(progress=True)


def _add_products(store, products: int, base: np.ndarray, rng: np.random.Generator) -> None:
    from django.db import transaction

    from ann import NoiseModel, calibrate_noise
    from jiansuo.index import ItemInfo
    from jiansuo.web.catalog.models import Product, ProductImage

    scale, _ = calibrate_noise(base, rng)
    noise = NoiseModel(base)
    chunk = 10_000
    for start in range(0, products, chunk):
        n = min(chunk, products - start)
        with transaction.atomic():
            made = Product.objects.bulk_create([
                Product(item_id=f"S-{start + i:07d}", title=f"Synthetic product {start + i}",
                        category=CATEGORIES[int(rng.integers(len(CATEGORIES)))],
                        price=f"{rng.uniform(10, 2000):.2f}", shop="Bench shop") for i in range(n)])
            ProductImage.objects.bulk_create([
                ProductImage(product=p, file=f"synthetic/{start + i:07d}.jpg", sha256="0" * 64)
                for i, p in enumerate(made)])
            store.add([ItemInfo(f"synthetic/{start + i:07d}.jpg") for i in range(n)],
                      noise.perturb(base[rng.integers(0, len(base), n)], scale, rng))
        print(f"  {start + n:,} / {products:,}", file=sys.stderr, end="\r")
    print(file=sys.stderr)


def timed_searches(port: int, bodies: list[bytes], n: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    times = []
    try:
        for i in range(n):
            t = time.perf_counter()
            status, data = post(port, bodies[i % len(bodies)], conn)
            times.append(1000 * (time.perf_counter() - t))
            if status != 200 or not json.loads(data)["results"]:
                raise RuntimeError(f"search answered {status}: {data[:300]!r}")
    finally:
        conn.close()
    return times


def scale_part(args, work: Path, photos: list[Path]) -> list[str]:
    site = load_site(args.items)
    from jiansuo.search import open_store

    with open_store(site / "site" / "catalog.idx") as store:
        base = store.get(store.ids())
    filters = {"unfiltered": {}, "one category (10%)": {"category": CATEGORIES[3]},
               "price 500-1,200 (35%)": {"min_price": "500", "max_price": "1200"}}
    rows = []
    for db in args.databases:
        if db == "postgres" and not args.pg:
            print("scale: no PostgreSQL ($JIANSUO_TEST_DATABASE_URL), skipped", file=sys.stderr)
            continue
        built, env = scale_site(db, args.products, base, args.pg)
        for mode, label in (("auto", "as shipped (auto: ANN index)"), ("exact", "before (exact: every vector)")):
            port = free_port()
            proc = start_server({**env, "JIANSUO_SEARCH_MODE": mode},
                                ["serve", "--bind", f"127.0.0.1:{port}", "--no-collectstatic", "--no-access-log"],
                                work / f"scale-{db}-{mode}.log", port)
            try:
                for name, fields in filters.items():
                    bodies = [multipart(p.read_bytes(), {"k": "10", "min_score": "-1", **fields}) for p in photos]
                    timed_searches(port, bodies, 10)  # warm: graph loaded, caches filled
                    t = sorted(timed_searches(port, bodies, args.queries))
                    rows.append({"db": db, "mode": label, "filter": name, "p50": statistics.median(t),
                                 "p99": t[min(len(t) - 1, int(0.99 * len(t)))], "mean": statistics.fmean(t)})
                    print(f"  {db} {mode} {name}: p50 {rows[-1]['p50']:.1f} ms, p99 {rows[-1]['p99']:.1f} ms",
                          file=sys.stderr)
            finally:
                stop(proc)
    lines = [
        f"### Scale: one API search among {args.products:,} products, end to end",
        "",
        f"{args.queries} searches per row, one at a time over one keep-alive connection (real photos, k=10); "
        "time from sending the upload to the last byte of the JSON answer: decoding, embedding, search, "
        "products and JSON included.",
        "",
        "| database | search | filter | p50 (ms) | p99 (ms) | mean (ms) |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['db']} | {r['mode']} | {r['filter']} | {r['p50']:.1f} | {r['p99']:.1f} | {r['mean']:.1f} |")
    return lines


# --------------------------------------------------------------------------- main


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child-build":
        child_build(sys.argv[2], int(sys.argv[3]))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=["load", "scale"], default=None)
    p.add_argument("--quick", action="store_true", help="20 s of load, 20,000 products, 100 searches per row")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--seconds", type=int, default=60)
    p.add_argument("--items", type=int, default=2000, help="products of the load catalogue (default 2000)")
    p.add_argument("--products", type=int, default=100_000, help="products of the scale catalogue")
    p.add_argument("--queries", type=int, default=300, help="searches per scale row (default 300)")
    p.add_argument("--databases", default="sqlite,postgres")
    p.add_argument("--pg", default=os.environ.get("JIANSUO_TEST_DATABASE_URL"),
                   help="PostgreSQL server URL (default $JIANSUO_TEST_DATABASE_URL, from scripts/services.sh)")
    p.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = p.parse_args()
    if args.quick:
        args.seconds, args.products, args.queries = 20, 20_000, 100
    args.databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    if args.only != "scale" and not shutil.which("wrk"):
        sys.exit("bench/site_load.py needs wrk: apt-get install wrk")
    stamp, load0 = time.strftime("%Y-%m-%d %H:%M"), os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="jiansuo-site-load-"))
    try:
        photos = query_photos(work / "queries")
        lines = ["## The site under load and at scale (`bench/site_load.py`)", "",
                 f"Command: `.venv/bin/python bench/site_load.py{' --quick' if args.quick else ''}` ({stamp}, "
                 f"{os.cpu_count()} cores, load average {load0:.1f} at start). Server: `python -m jiansuo.web serve` "
                 "(gunicorn, a worker process per core, 8 threads each), unless the row says otherwise.", ""]
        if args.only != "scale":
            lines += load_part(args, work, photos) + [""]
        if args.only != "load":
            lines += scale_part(args, work, photos)
        lines += ["", f"Load average at the end: {os.getloadavg()[0]:.1f}."]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("site_load", text)


if __name__ == "__main__":
    main()

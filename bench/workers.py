"""Catalogue import throughput with 1 and 2 Celery indexing workers, next to the in-process import.

    bash scripts/services.sh && source var/services.env
    nice -n 10 .venv/bin/python bench/workers.py                 # 1000 products
    nice -n 10 .venv/bin/python bench/workers.py --photos 200    # quick run

One run, on this machine, of ``python -m jiansuo.web import_catalog catalogue.csv --wait`` on the
same CSV of local JPEGs (800x800, bench/extract.py's real-photo crops and Fashion-MNIST products),
into a scratch PostgreSQL database on the server of scripts/services.sh (emptied before each row):

- in-process: no broker, the import command embeds the photos itself (the embedded default's way);
- 1 and 2 workers: ``celery -A jiansuo.web worker --concurrency 1`` processes on this machine, Redis
  as the broker; the command stores products and photos and queues the embedding, the workers
  embed and write the vectors to PostgreSQL, the command waits (``--wait``) for them to finish.

Measured per row: wall time from starting the command to the last vector stored, photos per second
(distinct photos: the generated catalogue repeats a few Fashion-MNIST products, stored once each),
when the rows and photos were all in (the command's summary line), and the latency of searches run
by this process against the same database every 0.25 s during the import (the site stays
responsive: its searches are SQL queries, and no web process embeds anything). Results go to stdout
and to this script's section of bench/RESULTS.md. The machine is shared with other jobs, so rates
are noisy: the load average is recorded with them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from results_md import write_section  # noqa: E402  (bench/ is on sys.path when run as a script)
from sites import scratch_database, site_env, stop  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

RESULTS = ROOT / "bench" / "RESULTS.md"
DB_NAME = "jiansuo_bench_workers"
TABLES = ("catalog_productimage", "catalog_product", "catalog_indextask", "catalog_indexjob")


def worker_env(work: Path, db_url: str, broker: str | None, queue: str) -> dict[str, str]:
    """The site's environment for the import command and the workers (sharing the database and media)."""
    env = site_env(work / "site", db_url, JIANSUO_TASK_QUEUE=queue)
    if broker:
        env["JIANSUO_BROKER_URL"] = broker
    return env


def start_worker(name: str, env: dict, queue: str, logs: Path) -> subprocess.Popen:
    log = open(logs / f"{name}.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "jiansuo.web", "worker", "-n", f"{name}@%h", "-Q", queue,
         "--concurrency", "1", "--without-gossip", "--without-mingle", "-l", "info"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while "ready." not in (logs / f"{name}.log").read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"worker {name} did not start:\n{(logs / f'{name}.log').read_text()[-2000:]}")
        time.sleep(0.2)
    return proc


class SearchProbe(threading.Thread):
    """Searches the catalogue (the site's pgvector query) every ``interval`` s and records the latency."""

    def __init__(self, vector, interval: float = 0.25):
        super().__init__(daemon=True)
        self.vector, self.interval = vector, interval
        self.latencies: list[float] = []
        self.errors = 0
        self.halt = threading.Event()

    def run(self) -> None:
        from django.db import connection

        from jiansuo.web.catalog.search import search_products

        while not self.halt.is_set():
            t = time.perf_counter()
            try:
                search_products(self.vector, 24)
                self.latencies.append(1000 * (time.perf_counter() - t))
            except Exception:  # noqa: BLE001 (a failed search is what the probe counts)
                self.errors += 1
            self.halt.wait(self.interval)
        connection.close()


def run_import(label: str, workers: int, args, work: Path, db_url: str, csv: Path, vector) -> dict:
    from django.db import connection

    from jiansuo.web.catalog.search import get_store

    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
    get_store().remove(get_store().ids())
    connection.close()
    import shutil

    shutil.rmtree(work / "site" / "media", ignore_errors=True)
    queue = f"jiansuo-bench-{uuid.uuid4().hex[:8]}"
    env = worker_env(work, db_url, args.broker if workers else None, queue)
    procs = [start_worker(f"w{n}", env, queue, work) for n in range(workers)]
    probe = SearchProbe(vector)
    try:
        probe.start()
        t0 = time.perf_counter()
        cmd = subprocess.Popen([sys.executable, "-m", "jiansuo.web", "import_catalog", str(csv), "--wait",
                                "--no-progress"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        rows_in = None
        out_lines = []
        for line in cmd.stdout:
            out_lines.append(line)
            if line.startswith("created ") and rows_in is None:
                rows_in = time.perf_counter() - t0
        cmd.wait()
        total = time.perf_counter() - t0
        if cmd.returncode:
            raise RuntimeError(f"import failed ({label}):\n{''.join(out_lines)}\n{cmd.stderr.read()[-3000:]}")
    finally:
        probe.halt.set()
        probe.join()
        for p in procs:
            stop(p)
    from jiansuo.web.catalog.search import get_store

    stored = len(get_store())
    lat = sorted(probe.latencies)
    return {"label": label, "workers": workers, "seconds": total, "rows_in": rows_in or total, "stored": stored,
            "rate": stored / total, "searches": len(lat), "search_errors": probe.errors,
            "search_p50": statistics.median(lat) if lat else float("nan"),
            "search_p95": lat[int(0.95 * (len(lat) - 1))] if lat else float("nan"),
            "output": "".join(out_lines).strip()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=int, default=1000,
                   help="products in the catalogue, one photo each (default 1000; a few photos repeat)")
    p.add_argument("--database", default=os.environ.get("JIANSUO_TEST_DATABASE_URL"),
                   help="PostgreSQL server URL (default $JIANSUO_TEST_DATABASE_URL); a scratch database is made there")
    p.add_argument("--broker", default=os.environ.get("JIANSUO_TEST_REDIS_URL"),
                   help="Redis URL (default $JIANSUO_TEST_REDIS_URL)")
    p.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = p.parse_args()
    if not args.database or not args.broker:
        sys.exit("bench/workers.py needs PostgreSQL and Redis: "
                 "run `bash scripts/services.sh && source var/services.env`")

    from extract import make_jpegs  # the same real-photo JPEGs as the extraction benchmark

    load_start = os.getloadavg()
    stamp = time.strftime("%Y-%m-%d %H:%M")  # before Django sets the process's time zone
    with tempfile.TemporaryDirectory(prefix="jiansuo-bench-workers-") as tmp:
        work = Path(tmp)
        print(f"writing {args.photos} JPEGs and the catalogue...", file=sys.stderr)
        paths = make_jpegs(work / "photos", args.photos)
        csv = work / "photos" / "catalogue.csv"
        with open(csv, "w") as fh:
            fh.write("item_id,title,category,price,shop,url,image\n")
            for i, path in enumerate(paths):
                fh.write(f"item{i:05d},Item {i},cat{i % 7},{10 + i % 90}.00,Bench shop,,"
                         f"{path.relative_to(csv.parent).as_posix()}\n")
        db_url = scratch_database(args.database, DB_NAME)
        env = worker_env(work, db_url, None, "unused")
        subprocess.run([sys.executable, "-m", "jiansuo.web", "migrate", "-v0"], env=env, check=True)
        os.environ.update({k: v for k, v in env.items() if k.startswith(("JIANSUO_", "DJANGO_", "DATABASE_URL"))})
        import django

        django.setup()
        from jiansuo.features import cached_extractor
        from jiansuo.pipeline import embed_query

        vector = embed_query(cached_extractor("efficientnet-lite0"), paths[0])
        rows = []
        for label, workers in (("in-process (no broker)", 0), ("1 Celery worker", 1), ("2 Celery workers", 2)):
            print(f"importing: {label}...", file=sys.stderr)
            r = run_import(label, workers, args, work, db_url, csv, vector)
            print(f"  {r['seconds']:.1f} s, {r['rate']:.1f} photos/s, {r['stored']} stored", file=sys.stderr)
            rows.append(r)
        from django.db import connection

        connection.close()
    load_end = os.getloadavg()

    base = rows[0]["rate"]
    lines = [
        "## Catalogue import with indexing workers (`bench/workers.py`)",
        "",
        f"Command: `nice -n 10 .venv/bin/python bench/workers.py --photos {args.photos}` "
        f"({stamp}, {os.cpu_count()} cores shared with other jobs: load average "
        f"{load_start[0]:.1f} at start, {load_end[0]:.1f} at end, so rates are noisy).",
        "",
        f"`import_catalog --wait` of a CSV of {args.photos} products, one local 800x800 JPEG each, into PostgreSQL "
        f"with pgvector (scratch database, emptied before each row); the command stores the products and "
        f"re-encoded photos, the embedding (efficientnet-lite0) runs in the command (in-process) or in "
        f"`celery -A jiansuo.web worker --concurrency 1` processes on this machine (Redis broker). Time = "
        f"command start to the last vector stored (worker start-up excluded, model loading included). "
        f"Searches: the site's pgvector query (24 products) run every 0.25 s by another process during the import.",
        "",
        "| indexing | total (s) | photos/s | vs in-process | rows and photos in after (s) | distinct photos stored "
        "| search during import, median / p95 (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['label']} | {r['seconds']:.1f} | {r['rate']:.1f} | {r['rate'] / base:.2f}x | "
                     f"{r['rows_in']:.1f} | {r['stored']} | {r['search_p50']:.1f} / {r['search_p95']:.1f}"
                     + (f" ({r['search_errors']} failed)" if r["search_errors"] else "") + " |")
    lines += [
        "",
        f"This machine has {os.cpu_count()} cores: each worker's ONNX Runtime uses all of them, so a second worker "
        "here mostly overlaps the photo decoding and the database writes with inference instead of adding "
        "compute. Workers on other machines add their cores: the database and the broker only see a few rows "
        "and messages per photo.",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("workers", text)
        print(f"\nwritten to {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()

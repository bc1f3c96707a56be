"""``import_catalog`` against a real HTTP server on 127.0.0.1 serving good, broken, slow and huge photos."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import TestCase

from jiansuo.index import Index, IndexError_
from jiansuo.web.catalog.fetch import Fetcher
from jiansuo.web.catalog.importer import CatalogFileError, import_catalog
from jiansuo.web.catalog.models import Product, ProductImage
from jiansuo.web.catalog.search import embed, search_products
from tests.conftest import real_photo

from .support import IsolatedSiteMixin, jpeg_bytes

MAX_BYTES = 400_000


class PhotoServer(ThreadingHTTPServer):
    """Serves photos and misbehaviours; records every request path."""

    daemon_threads = True
    slow_seconds_default = 8.0

    def __init__(self):
        super().__init__(("127.0.0.1", 0), PhotoHandler)
        self.requests: list[str] = []
        self.slow_seconds = self.slow_seconds_default
        self.flaky_failures = 1
        self.photos = {n: jpeg_bytes(real_photo(n)) for n in ("chelsea", "rocket", "astronaut", "hubble_deep_field")}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class PhotoHandler(BaseHTTPRequestHandler):
    server: PhotoServer

    def log_message(self, *args):  # keep test output quiet
        pass

    def send_bytes(self, data: bytes, status: int = 200, length: int | None = None):
        self.send_response(status)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(data) if length is None else length))
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as it should for huge files

    def do_GET(self):
        srv = self.server
        srv.requests.append(self.path)
        path = self.path.split("?")[0]
        if path.startswith("/photos/"):
            self.send_bytes(srv.photos[path[len("/photos/"):-4]])
        elif path == "/broken.jpg":
            self.send_bytes(srv.photos["chelsea"][:3000])
        elif path == "/text.jpg":
            self.send_bytes(b"<html><body>Sorry, this shop moved.</body></html>")
        elif path == "/slow.jpg":
            time.sleep(srv.slow_seconds)
            self.send_bytes(srv.photos["rocket"])
        elif path == "/huge.jpg":
            self.send_bytes(b"\xff\xd8" + b"\0" * 4096, length=MAX_BYTES * 10)
        elif path == "/huge-stream.jpg":
            self.protocol_version = "HTTP/1.0"
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()
            try:
                for _ in range(3 * MAX_BYTES // 65536 + 1):
                    self.wfile.write(b"\0" * 65536)
            except (BrokenPipeError, ConnectionResetError):
                pass
        elif path == "/flaky.jpg":
            if srv.flaky_failures > 0:
                srv.flaky_failures -= 1
                self.send_bytes(b"busy", status=503)
            else:
                self.send_bytes(srv.photos["rocket"])
        elif path == "/to-file.jpg":
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.end_headers()
        else:
            self.send_bytes(b"not here", status=404)


@pytest.fixture(scope="module")
def photo_server():
    server = PhotoServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("item_id,title,category,price,shop,url,image\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="class")
def photo_server_cls(request, photo_server):
    request.cls.server = photo_server


@pytest.mark.usefixtures("photo_server_cls")
class ImportTests(IsolatedSiteMixin, TestCase):
    server: PhotoServer

    def setUp(self):
        self.work = self.site_dir / f"import-{self._testMethodName}"
        self.work.mkdir()
        real_photo("coffee").save(self.work / "coffee.jpg", quality=90)
        self.server.requests.clear()
        self.server.flaky_failures = 1

    def run_import(self, path: Path, **options):
        # Generous for a loaded 2-core machine (the server shares this process), well below slow_seconds.
        fetcher = Fetcher(timeout=2.0, retries=1, max_bytes=MAX_BYTES, backoff=0.05)
        return import_catalog(path, fetcher=fetcher, progress=False, **options)

    def stored_files(self) -> set[str]:
        root = Path(settings.MEDIA_ROOT)
        return {p.relative_to(root).as_posix() for p in (root / "products").rglob("*.jpg")}

    def catalogue(self, slow: bool = True) -> Path:
        u = self.server.url
        rows = [
            f"a1,Tabby cat,pets,129.00,Cat shop,https://shop.example.com/a1,{u}/photos/chelsea.jpg",   # 2
            "a2,Espresso cup,kitchen,35.5,Cup shop,,coffee.jpg",                                         # 3
            f"b1,Broken,x,1,s,,{u}/broken.jpg",                                                          # 4
            f"b2,Text,x,1,s,,{u}/text.jpg",                                                              # 5
            f"b3,Slow,x,1,s,,{u}/slow.jpg",                                                              # 6
            f"b4,Huge,x,1,s,,{u}/huge.jpg",                                                              # 7
            f"b5,Huge stream,x,1,s,,{u}/huge-stream.jpg",                                                # 8
            f"a3,Rocket,toys,899,Space shop,https://shop.example.com/a3,{u}/flaky.jpg",                  # 9
            f"b6,Gone,x,1,s,,{u}/missing.jpg",                                                           # 10
            f"b7,Bad price,x,cheap,s,,{u}/photos/rocket.jpg",                                            # 11
            f"b8,,x,1,s,,{u}/photos/rocket.jpg",                                                         # 12
            f"a1,Duplicate,x,1,s,,{u}/photos/rocket.jpg",                                                # 13
            f"a4,\"Another cat, same photo\",pets,99,Other shop,,{u}/photos/chelsea.jpg?copy=1",          # 14
            f"b9,Redirect,x,1,s,,{u}/to-file.jpg",                                                       # 15
            f"a5,Two photos,posters,19.9,Poster shop,,{u}/photos/astronaut.jpg|{u}/photos/hubble_deep_field.jpg",  # 16
            f"b10,Bad url,x,1,s,ftp://example.com/b10,{u}/photos/rocket.jpg",                             # 17
        ]
        return write_csv(self.work / "catalogue.csv", [r for r in rows if slow or "slow.jpg" not in r])

    def test_import_reports_bad_rows_and_keeps_the_good(self):
        report = self.run_import(self.catalogue())
        self.assertEqual(report.created, 5, report.summary())
        reasons = {line: reason for line, _item, reason in report.skipped}
        self.assertEqual(sorted(reasons), [4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17])
        self.assertIn("truncated", reasons[4])
        self.assertIn("not an image", reasons[5])
        self.assertIn("timed out", reasons[6])
        self.assertIn("after 2 attempts", reasons[6])
        self.assertIn("too large", reasons[7])
        self.assertIn("too large", reasons[8])
        self.assertIn("HTTP 404", reasons[10])
        self.assertIn("price", reasons[11])
        self.assertIn("title is empty", reasons[12])
        self.assertIn("already given on line 2", reasons[13])
        self.assertIn("redirect", reasons[15].lower())
        self.assertIn("url", reasons[17])
        self.assertEqual(self.server.requests.count("/flaky.jpg"), 2)  # retried after a 503
        self.assertEqual(self.server.requests.count("/missing.jpg"), 1)  # a 404 is not retried

        self.assertEqual(set(Product.objects.values_list("item_id", flat=True)), {"a1", "a2", "a3", "a4", "a5"})
        a1 = Product.objects.get(item_id="a1")
        self.assertEqual((a1.title, a1.category, str(a1.price), a1.shop), ("Tabby cat", "pets", "129.00", "Cat shop"))
        self.assertEqual(Product.objects.get(item_id="a5").images.count(), 2)
        # Identical photos are stored once: a1 and a4 share one file.
        self.assertEqual(ProductImage.objects.get(product__item_id="a1").file,
                         ProductImage.objects.get(product__item_id="a4").file)
        files = set(ProductImage.objects.values_list("file", flat=True))
        self.assertEqual(len(files), 5)
        self.assertEqual(self.stored_files(), files)
        self.assertEqual(self.index_ids, files)
        vector = embed(real_photo("chelsea").resize((200, 150)))
        self.assertEqual({h.product.item_id for h in search_products(vector, 2)}, {"a1", "a4"})

    def test_rerun_changes_only_what_changed(self):
        path = self.catalogue(slow=False)
        self.run_import(path)
        first_files = set(ProductImage.objects.values_list("file", flat=True))
        self.server.requests.clear()
        again = self.run_import(path)
        self.assertEqual((again.created, again.updated, again.unchanged), (0, 0, 5))
        self.assertEqual(again.indexed, 0)
        self.assertNotIn("/photos/chelsea.jpg", self.server.requests)  # not downloaded again
        self.assertEqual(set(ProductImage.objects.values_list("file", flat=True)), first_files)

        # a1's price changes; a2's local photo file gets new content under the same name.
        old_coffee = ProductImage.objects.get(product__item_id="a2").file
        real_photo("clock").save(self.work / "coffee.jpg", quality=90)
        path.write_text(path.read_text().replace("a1,Tabby cat,pets,129.00", "a1,Tabby cat,pets,119.00"))
        changed = self.run_import(path)
        self.assertEqual((changed.created, changed.updated, changed.unchanged), (0, 2, 3))
        self.assertEqual(str(Product.objects.get(item_id="a1").price), "119.00")
        new_coffee = ProductImage.objects.get(product__item_id="a2").file
        self.assertNotEqual(new_coffee, old_coffee)
        self.assertIn(new_coffee, self.index_ids)
        self.assertNotIn(old_coffee, self.index_ids)
        self.assertNotIn(old_coffee, self.stored_files())

    def test_json_lines_with_a_photo_list(self):
        u = self.server.url
        path = self.work / "catalogue.jsonl"
        path.write_text("\n".join([
            json.dumps({"item_id": "j1", "title": "Cat", "price": 12.5, "currency": "usd",
                        "image": [f"{u}/photos/chelsea.jpg", "coffee.jpg"]}),
            "{not json",
            json.dumps(["a", "list"]),
            "",
            json.dumps({"item_id": "j2", "title": "Bad currency", "price": 1, "currency": "yuan",
                        "image": "coffee.jpg"}),
            json.dumps({"item_id": "j/3", "title": "Slash", "price": 1, "image": "coffee.jpg"}),
        ]) + "\n", encoding="utf-8")
        report = self.run_import(path)
        self.assertEqual(report.created, 1)
        self.assertEqual({line for line, *_ in report.skipped}, {2, 3, 5, 6})
        j1 = Product.objects.get(item_id="j1")
        self.assertEqual((j1.currency, str(j1.price), j1.images.count()), ("USD", "12.50", 2))

    def test_unusable_files_are_refused_whole(self):
        (self.work / "nohead.csv").write_text("id,name\n1,x\n")
        with self.assertRaisesRegex(CatalogFileError, "lacks the column"):
            self.run_import(self.work / "nohead.csv")
        (self.work / "x.txt").write_text("item_id\n")
        with self.assertRaisesRegex(CatalogFileError, "unknown format"):
            self.run_import(self.work / "x.txt")
        with self.assertRaises(CommandError):
            call_command("import_catalog", str(self.work / "absent.csv"), "--no-progress")

    def test_non_utf8_line_is_skipped_with_its_number(self):
        path = self.work / "latin1.csv"
        path.write_bytes(b"item_id,title,category,price,shop,url,image\n"
                         b"c1,Caf\xe9,x,1,s,,coffee.jpg\n"
                         b"c2,Cafe,x,1,s,,coffee.jpg\n")
        report = self.run_import(path)
        self.assertEqual(report.created, 1)
        self.assertEqual([(line, "UTF-8" in reason) for line, _i, reason in report.skipped], [(2, True)])

    def test_command_prints_a_summary(self):
        from io import StringIO

        out, err = StringIO(), StringIO()
        path = write_csv(self.work / "small.csv", ["c1,Cup,kitchen,9,s,,coffee.jpg", "c2,Bad,kitchen,x,s,,coffee.jpg"])
        call_command("import_catalog", str(path), "--no-progress", stdout=out, stderr=err)
        self.assertIn("created 1", out.getvalue())
        self.assertIn("read from disk 1", out.getvalue())
        self.assertIn("line 3 (c2): price", err.getvalue())


def indexed_count(path: Path) -> int:
    """Images in the index another process is writing (0 while it does not exist or is being created)."""
    try:
        with Index.open(path) as index:
            return len(index)
    except (IndexError_, KeyError):  # KeyError: the file exists but its metadata is not committed yet
        return 0


@pytest.mark.slow
def test_an_interrupted_import_resumes_without_duplicates(photo_server, tmp_path):
    """Kill -9 an import in the middle of its second chunk; the rerun completes the catalogue."""
    env = {**os.environ, "JIANSUO_DATA_DIR": str(tmp_path / "site"),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    manage = [sys.executable, "-m", "jiansuo.web"]
    subprocess.run([*manage, "migrate", "-v0"], env=env, check=True, timeout=120)
    for name in ("coffee", "clock"):
        real_photo(name).save(tmp_path / f"{name}.jpg", quality=90)
    u = photo_server.url
    path = write_csv(tmp_path / "catalogue.csv", [
        "k1,Cup,kitchen,9,s,,coffee.jpg", "k2,Clock,kitchen,19,s,,clock.jpg",   # first chunk
        f"k3,Rocket,toys,99,s,,{u}/slow.jpg", f"k4,Cat,pets,5,s,,{u}/photos/chelsea.jpg",  # second chunk
    ])
    photo_server.slow_seconds = 60.0
    command = [*manage, "import_catalog", str(path), "--chunk", "2", "--timeout", "30", "--no-progress"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    index_path = tmp_path / "site" / "catalog.idx"
    try:
        deadline = time.monotonic() + 120
        while indexed_count(index_path) != 2:
            assert proc.poll() is None, "the import ended before it could be interrupted"
            assert time.monotonic() < deadline, "the first chunk was never indexed"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    photo_server.slow_seconds = 0.0
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    finally:
        photo_server.slow_seconds = PhotoServer.slow_seconds_default
    assert done.returncode == 0, done.stderr
    assert "created 2, updated 0, unchanged 2" in done.stdout
    with sqlite3.connect(tmp_path / "db.sqlite3") as db:
        items = [r[0] for r in db.execute("SELECT item_id FROM catalog_product ORDER BY item_id")]
        files = {r[0] for r in db.execute("SELECT file FROM catalog_productimage")}
    assert items == ["k1", "k2", "k3", "k4"]
    with Index.open(index_path) as index:
        assert set(index.items()) == files

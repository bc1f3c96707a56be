"""``python -m jiansuo.web serve``: the site on gunicorn, as it runs in production and in the demo.

A real server process on a free port of 127.0.0.1, over a catalogue imported by the real commands.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import real_photo

from .support import jpeg_bytes

PHOTOS = {"cat-1": "chelsea", "coffee-1": "coffee", "rocket-1": "rocket", "astro-1": "astronaut"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def multipart(fields: dict[str, str], files: dict[str, bytes]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts += [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{k}.jpg"\r\n'
              f"Content-Type: image/jpeg\r\n\r\n".encode() + data + b"\r\n" for k, data in files.items()]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A site with four products, served by `serve` with its defaults; yields (port, its log file)."""
    root = tmp_path_factory.mktemp("serve")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JIANSUO_", "DJANGO_", "DATABASE_URL"))}
    env.update(JIANSUO_DATA_DIR=str(root / "site"), JIANSUO_SECRET_KEY=secrets.token_urlsafe(50),
               JIANSUO_DEBUG="0", JIANSUO_HTTPS="0", JIANSUO_ALLOWED_HOSTS="127.0.0.1", JIANSUO_PUBLIC_SEARCH="1",
               JIANSUO_SERVE_FILES="1", JIANSUO_MAX_UPLOAD_MB="1", PYTHONUNBUFFERED="1")
    if os.environ.get("JIANSUO_CACHE"):
        env["JIANSUO_CACHE"] = os.environ["JIANSUO_CACHE"]
    lines = ["item_id,title,category,price,shop,url,image"]
    for item, name in PHOTOS.items():
        real_photo(name).save(root / f"{name}.jpg", quality=92)
        lines.append(f"{item},Product {item},things,10.00,Shop,https://shop.example.com/{item},{name}.jpg")
    (root / "catalogue.csv").write_text("\n".join(lines) + "\n")
    site = [sys.executable, "-m", "jiansuo.web"]
    for cmd in (["migrate", "-v", "0"], ["import_catalog", str(root / "catalogue.csv"), "--no-progress"]):
        subprocess.run(site + cmd, env=env, check=True, capture_output=True, timeout=300)
    port = free_port()
    log = root / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(site + ["serve", "--bind", f"127.0.0.1:{port}"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"serve did not start:\n{log.read_text()}")
                time.sleep(0.2)
        yield port, log
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def request(port: int, method: str, path: str, body: bytes | None = None, content_type: str | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": content_type} if content_type else {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_serve_answers_pages_static_files_and_the_api(server):
    port, log = server
    status, _, html = request(port, "GET", "/")
    assert status == 200 and b"<html" in html
    status, headers, css = request(port, "GET", "/static/jiansuo/site.css")
    assert status == 200 and headers["Content-Type"].startswith("text/css") and css
    assert "max-age" in headers.get("Cache-Control", "")  # WhiteNoise, not Django's development view
    query = real_photo("chelsea").crop((40, 30, 420, 300)).resize((250, 180))
    body, ctype = multipart({"k": "2"}, {"image": jpeg_bytes(query, 80)})
    status, headers, data = request(port, "POST", "/api/search", body, ctype)
    assert status == 200 and headers["Content-Type"] == "application/json", data
    assert [r["item_id"] for r in json.loads(data)["results"]][0] == "cat-1"
    deadline = time.monotonic() + 10  # the access log line is written just after the answer is sent
    while '"POST /api/search HTTP/1.1" 200' not in (text := log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert f"with {os.cpu_count()} worker(s)" in text  # one worker process per core by default
    assert '"POST /api/search HTTP/1.1" 200' in text  # the access log


def test_an_oversized_upload_gets_its_413_not_a_reset_connection(server):
    port, _ = server
    body, ctype = multipart({}, {"image": os.urandom(5 * 1024 * 1024)})  # the limit is 1 MB
    for _ in range(3):
        status, headers, data = request(port, "POST", "/api/search", body, ctype)
        assert status == 413 and headers["Content-Type"] == "application/json"
        assert "too large" in json.loads(data)["error"]


def test_the_server_log_has_no_tracebacks(server):
    _, log = server
    assert "Traceback" not in Path(log).read_text()

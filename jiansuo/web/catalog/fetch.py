"""Getting a catalogue photo's bytes from a local path or an http(s) URL, within limits.

Downloads have a per-operation timeout and an overall deadline (a server that trickles bytes
cannot hold an import forever), a size limit checked both against Content-Length and while
reading, and retries with backoff for errors that may pass (timeouts, connection resets, 5xx,
429). Redirects are followed only to http(s) URLs.
"""

from __future__ import annotations

import http.client
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from jiansuo import __version__


class FetchError(Exception):
    """A photo that could not be fetched; ``str(err)`` says why."""


class _Permanent(FetchError):
    """A failure that a retry would not fix (404, too large, ...)."""


def is_url(source: str) -> bool:
    """True for an http(s) URL, False for anything else (a local path)."""
    return urlsplit(source).scheme.lower() in ("http", "https")


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if not is_url(newurl):
            raise _Permanent(f"redirect to a non-http(s) URL refused: {newurl}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


@dataclass
class Fetcher:
    """Fetches photo bytes; safe to share between threads."""

    timeout: float = 10.0
    retries: int = 2
    max_bytes: int = 20 * 1024 * 1024
    backoff: float = 0.5

    def __post_init__(self) -> None:
        self._opener = urllib.request.build_opener(_HttpOnlyRedirects)

    def fetch(self, source: str, base_dir: Path | None = None) -> bytes:
        """The bytes of ``source`` (URL, or a path relative to ``base_dir``); FetchError otherwise."""
        if is_url(source):
            return self._download(source)
        return self._read_local(source, base_dir)

    def _read_local(self, source: str, base_dir: Path | None) -> bytes:
        path = Path(source).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        try:
            size = path.stat().st_size
            if size > self.max_bytes:
                raise FetchError(f"file too large: {size:,} bytes (limit {self.max_bytes:,})")
            return path.read_bytes()
        except OSError as exc:
            raise FetchError(f"cannot read {path}: {exc.strerror or exc}") from None

    def _download(self, url: str) -> bytes:
        attempt = 0
        while True:
            try:
                return self._download_once(url)
            except _Permanent:
                raise
            except FetchError as exc:
                if attempt >= self.retries:
                    suffix = f" (after {attempt + 1} attempts)" if attempt else ""
                    raise FetchError(f"{exc}{suffix}") from None
                time.sleep(self.backoff * 2 ** attempt)
                attempt += 1

    def _download_once(self, url: str) -> bytes:
        deadline = time.monotonic() + 3 * self.timeout
        request = urllib.request.Request(url, headers={"User-Agent": f"jiansuo-import/{__version__}",
                                                       "Accept": "image/*"})
        try:
            with self._opener.open(request, timeout=self.timeout) as resp:
                declared = resp.headers.get("Content-Length")
                if declared and declared.isdigit() and int(declared) > self.max_bytes:
                    raise _Permanent(f"too large: {int(declared):,} bytes (limit {self.max_bytes:,})")
                chunks, total = [], 0
                while True:
                    if time.monotonic() > deadline:
                        raise FetchError(f"download took longer than {3 * self.timeout:g}s")
                    chunk = resp.read(64 * 1024)
                    if not chunk:
                        break
                    total += len(chunk)
                    if total > self.max_bytes:
                        raise _Permanent(f"too large: more than {self.max_bytes:,} bytes")
                    chunks.append(chunk)
                return b"".join(chunks)
        except urllib.error.HTTPError as exc:
            reason = f"HTTP {exc.code} {exc.reason}"
            if exc.code >= 500 or exc.code in (408, 429):
                raise FetchError(reason) from None
            raise _Permanent(reason) from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, FetchError):
                raise exc.reason from None
            raise FetchError(f"cannot connect: {exc.reason}") from None
        except (TimeoutError, socket.timeout):
            raise FetchError(f"timed out after {self.timeout:g}s") from None
        except (ConnectionError, OSError, http.client.HTTPException) as exc:
            raise FetchError(f"connection failed: {exc}") from None

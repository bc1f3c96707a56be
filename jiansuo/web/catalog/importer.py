"""Importing a catalogue file (CSV or JSON Lines) into the database and the search index.

Columns: ``item_id, title, category, price, shop, url, image`` (and optionally ``currency``).
``image`` is a local path (relative to the catalogue file) or an http(s) URL; several photos are
separated by ``|`` in CSV or given as a list in JSON Lines.

The file is processed in chunks: the chunk's photos are fetched concurrently (and stored once
per distinct content), its rows are written in one transaction, then its new photos are
embedded (or, with a broker configured, queued for the indexing workers as tasks of one job per
import: see :mod:`.jobs`). An interrupted import keeps every finished chunk, and a rerun only changes what
differs: unchanged rows are not written, and photos already downloaded from the same URL are
not downloaded again (unless ``refresh_images``). A bad row is reported with its line number
and skipped; the rest of the file is imported.
"""

from __future__ import annotations

import csv
import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Iterable, Iterator

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import transaction

from jiansuo.images import ImageError

from . import services
from .fetch import Fetcher, FetchError, is_url
from .models import IndexJob, Product, ProductImage
from .photos import StoredPhoto, store_product_photo

COLUMNS = ("item_id", "title", "category", "price", "shop", "url", "image")
REQUIRED = ("item_id", "title", "price", "image")
_MAX_PRICE = Decimal("9999999999.99")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_url_ok = URLValidator(schemes=["http", "https"])


class CatalogFileError(Exception):
    """The file as a whole cannot be imported (unknown format, missing columns, unreadable)."""


class RowError(ValueError):
    """One row cannot be imported; ``str(err)`` says why."""


@dataclass(frozen=True)
class CatalogRow:
    line: int
    item_id: str
    title: str
    category: str
    price: Decimal
    currency: str
    shop: str
    url: str
    images: tuple[str, ...]


@dataclass
class ImportReport:
    """Counts, and every skipped row as (line, item id or "", reason)."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: list[tuple[int, str, str]] = field(default_factory=list)
    photos_downloaded: int = 0
    photos_read: int = 0
    photos_reused: int = 0
    indexed: int = 0
    index_failed: list[tuple[str, str]] = field(default_factory=list)
    #: Photos queued for the indexing workers, and their job (with a broker configured).
    queued: int = 0
    job: IndexJob | None = None

    def summary(self) -> str:
        queued = f"; queued {self.queued} for the indexing workers (job {self.job.pk})" if self.job else ""
        lines = [f"created {self.created}, updated {self.updated}, unchanged {self.unchanged}, "
                 f"skipped {len(self.skipped)}; photos downloaded {self.photos_downloaded}, "
                 f"read from disk {self.photos_read}, reused {self.photos_reused}; indexed {self.indexed}{queued}"]
        lines += [f"  line {ln}{f' ({item})' if item else ''}: {reason}" for ln, item, reason in self.skipped]
        lines += [f"  photo {pid} not indexed: {reason}" for pid, reason in self.index_failed]
        return "\n".join(lines)


# ------------------------------------------------------------------ reading the file


def read_records(path: Path, fmt: str | None = None) -> Iterator[tuple[int, dict | RowError]]:
    """Yield (line number, record or RowError) for every data row of a CSV or JSON Lines file."""
    fmt = fmt or {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}.get(path.suffix.lower())
    if fmt not in ("csv", "jsonl"):
        raise CatalogFileError(f"{path}: unknown format; name the file .csv or .jsonl, or pass --format")
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise CatalogFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    with fh:
        yield from (_read_jsonl(fh) if fmt == "jsonl" else _read_csv(fh))


def _decoded_lines(fh, bad: dict[int, str]) -> Iterator[str]:
    """Lines as text; a line that is not UTF-8 is recorded in ``bad`` and replaced by a blank one."""
    for n, raw in enumerate(fh, start=1):
        try:
            text = raw.decode("utf-8-sig" if n == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            bad[n] = f"not UTF-8 text ({exc.reason} at byte {exc.start})"
            text = "\n"
        yield text


def _read_jsonl(fh) -> Iterator[tuple[int, dict | RowError]]:
    bad: dict[int, str] = {}
    for n, text in enumerate(_decoded_lines(fh, bad), start=1):
        if n in bad:
            yield n, RowError(bad.pop(n))
            continue
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            yield n, RowError(f"invalid JSON: {exc.msg} at column {exc.colno}")
            continue
        yield n, record if isinstance(record, dict) else RowError("a line must be a JSON object")


def _read_csv(fh) -> Iterator[tuple[int, dict | RowError]]:
    bad: dict[int, str] = {}
    reader = csv.reader(_decoded_lines(fh, bad))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise CatalogFileError("the file is empty") from None
    except csv.Error as exc:
        raise CatalogFileError(f"line 1: unreadable header ({exc})") from None
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise CatalogFileError(f"line 1: the header lacks the column(s) {', '.join(missing)} "
                               f"(expected {','.join(COLUMNS)})")
    start = reader.line_num + 1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            yield start, RowError(f"malformed CSV: {exc}")
            start = reader.line_num + 1
            continue
        line, start = start, reader.line_num + 1
        for n in sorted(k for k in bad if k <= reader.line_num):
            yield n, RowError(bad.pop(n))
        if not values or all(not v.strip() for v in values):
            continue
        if len(values) > len(header):
            yield line, RowError(f"{len(values)} fields but the header has {len(header)}")
            continue
        yield line, dict(zip(header[:len(values)], values, strict=True))
    for n in sorted(bad):
        yield n, RowError(bad[n])


def parse_row(record: dict, line: int) -> CatalogRow:
    """Check and normalise one record; raises RowError with a clear reason."""
    def text(name: str, limit: int, required: bool = False) -> str:
        value = record.get(name)
        value = "" if value is None else str(value).strip()
        if required and not value:
            raise RowError(f"{name} is empty")
        if len(value) > limit:
            raise RowError(f"{name} is longer than {limit} characters")
        return value

    item_id = text("item_id", 100, required=True)
    if "/" in item_id or any(ord(c) < 32 for c in item_id):
        raise RowError("item_id must not contain '/' or control characters")
    title = text("title", 300, required=True)
    raw_price = text("price", 40, required=True)
    try:
        price = Decimal(raw_price)
    except InvalidOperation:
        raise RowError(f"price {raw_price!r} is not a number (write e.g. 1299.00)") from None
    if not price.is_finite() or price < 0 or price > _MAX_PRICE:
        raise RowError(f"price {raw_price!r} is out of range")
    price = price.quantize(Decimal("0.01"))
    currency = text("currency", 3).upper() or settings.JIANSUO_DEFAULT_CURRENCY
    if not _CURRENCY.match(currency):
        raise RowError(f"currency {currency!r} is not a three-letter code such as CNY")
    url = text("url", 1000)
    if url:
        try:
            _url_ok(url)
        except ValidationError:
            raise RowError(f"url {url!r} is not an http(s) URL") from None
    raw_images = record.get("image")
    if isinstance(raw_images, list):
        images = [str(i).strip() for i in raw_images]
    else:
        images = [] if raw_images is None else [i.strip() for i in str(raw_images).split("|")]
    images = [i for i in images if i]
    if not images:
        raise RowError("image is empty")
    if any(len(i) > 1000 for i in images):
        raise RowError("an image path or URL is longer than 1000 characters")
    return CatalogRow(line, item_id, title, text("category", 100), price, currency, text("shop", 200), url,
                      tuple(dict.fromkeys(images)))


# ------------------------------------------------------------------ importing


class CatalogImporter:
    """Imports one catalogue file; see the module docstring for the guarantees."""

    def __init__(self, path: str | Path, *, fetcher: Fetcher | None = None, workers: int = 8,
                 chunk_size: int = 256, refresh_images: bool = False, fmt: str | None = None,
                 progress: bool = True):
        self.path = Path(path)
        self.base_dir = self.path.resolve().parent
        self.fetcher = fetcher or Fetcher()
        self.workers = workers
        self.chunk_size = chunk_size
        self.refresh_images = refresh_images
        self.fmt = fmt
        self.progress = progress
        self.report = ImportReport()

    def run(self) -> ImportReport:
        """Import the whole file, then make the index agree with the database."""
        from tqdm import tqdm

        records = read_records(self.path, self.fmt)
        first = next(records, None)  # surfaces a CatalogFileError before anything is written
        total = _count_lines(self.path)
        seen: dict[str, int] = {}
        batch: list[CatalogRow] = []
        with ThreadPoolExecutor(self.workers, thread_name_prefix="fetch") as pool, \
                tqdm(total=total, unit="row", disable=not self.progress, dynamic_ncols=True) as bar:
            for line, record in _chain(first, records):
                bar.update(line - bar.n)
                row = self._parse(line, record, seen)
                if row is not None:
                    batch.append(row)
                if len(batch) >= self.chunk_size:
                    self._import_chunk(batch, pool)
                    batch = []
                    bar.set_postfix(created=self.report.created, updated=self.report.updated,
                                    skipped=len(self.report.skipped))
            if batch:
                self._import_chunk(batch, pool)
            bar.update(max(0, total - bar.n))
        # Repairs whatever an earlier, interrupted run left between a commit and its indexing.
        self._absorb(self._sync(None))
        self.report.skipped.sort()
        return self.report

    def _parse(self, line: int, record, seen: dict[str, int]) -> CatalogRow | None:
        if isinstance(record, RowError):
            self.report.skipped.append((line, "", str(record)))
            return None
        try:
            row = parse_row(record, line)
        except RowError as exc:
            self.report.skipped.append((line, str(record.get("item_id") or "")[:100], str(exc)))
            return None
        if row.item_id in seen:
            self.report.skipped.append((line, row.item_id, f"item_id already given on line {seen[row.item_id]}"))
            return None
        seen[row.item_id] = line
        return row

    def _import_chunk(self, rows: list[CatalogRow], pool: ThreadPoolExecutor) -> None:
        existing = {p.item_id: p for p in Product.objects.filter(item_id__in=[r.item_id for r in rows])
                    .prefetch_related("images")}
        # Photos previously downloaded from the same URL are reused instead of fetched again.
        reusable: dict[tuple[str, str], ProductImage] = {}
        if not self.refresh_images:
            for p in existing.values():
                for img in p.images.all():
                    if img.source and is_url(img.source):
                        reusable[(p.item_id, img.source)] = img
        jobs = {}
        for row in rows:
            for src in row.images:
                if (row.item_id, src) not in reusable and src not in jobs:
                    jobs[src] = pool.submit(self._fetch_and_store, src)
        stored = {src: job.result() for src, job in jobs.items()}
        for src, result in stored.items():
            if isinstance(result, StoredPhoto):
                if is_url(src):
                    self.report.photos_downloaded += 1
                else:
                    self.report.photos_read += 1

        touched: set[str] = set()
        with transaction.atomic():
            for row in rows:
                errors = [f"image {src}: {stored[src]}" for src in row.images
                          if src in stored and not isinstance(stored[src], StoredPhoto)]
                if errors:
                    self.report.skipped.append((row.line, row.item_id, "; ".join(errors)))
                    continue
                photos = []
                for src in row.images:
                    old = reusable.get((row.item_id, src))
                    if old is not None:
                        self.report.photos_reused += 1
                        photos.append((src, StoredPhoto(old.file, old.sha256, old.width, old.height)))
                    else:
                        photos.append((src, stored[src]))
                touched |= self._save_row(row, existing.get(row.item_id), photos)
        self._absorb(self._sync(touched))

    def _fetch_and_store(self, src: str) -> StoredPhoto | str:
        """Runs in a worker thread: the stored photo, or the reason it could not be had."""
        try:
            return store_product_photo(self.fetcher.fetch(src, self.base_dir))
        except (FetchError, ImageError) as exc:
            return str(exc)
        except Exception as exc:  # noqa: BLE001 (one hostile photo must not end the import)
            return f"unexpected error: {type(exc).__name__}: {exc}"

    def _save_row(self, row: CatalogRow, product: Product | None,
                  photos: list[tuple[str, StoredPhoto]]) -> set[str]:
        """Create or update one product; returns the photo ids whose index entry may change."""
        fields = {"title": row.title, "category": row.category, "price": row.price, "currency": row.currency,
                  "shop": row.shop, "url": row.url}
        # One file per product even when two sources have the same content.
        unique: dict[str, tuple[str, StoredPhoto]] = {}
        for src, photo in photos:
            unique.setdefault(photo.file, (src, photo))
        wanted = [(photo.file, src) for src, photo in unique.values()]
        if product is None:
            product = Product.objects.create(item_id=row.item_id, **fields)
            self.report.created += 1
            before: set[str] = set()
        else:
            before = {img.file for img in product.images.all()}
            current = [(img.file, img.source) for img in product.images.all()]
            changed = [k for k, v in fields.items() if getattr(product, k) != v]
            if not changed and current == wanted:
                self.report.unchanged += 1
                return set()
            for k in changed:
                setattr(product, k, fields[k])
            product.save()
            self.report.updated += 1
            if current == wanted:
                return set()
            product.images.all().delete()
        ProductImage.objects.bulk_create([
            ProductImage(product=product, file=photo.file, sha256=photo.sha256, width=photo.width,
                         height=photo.height, position=pos, source=src)
            for pos, (src, photo) in enumerate(unique.values())
        ])
        return before | set(unique)

    def _sync(self, photo_ids: set[str] | None) -> services.SyncReport:
        return services.sync_index(photo_ids, progress=self.progress and photo_ids is None, job=self.report.job,
                                   label=f"import {self.path.name}")

    def _absorb(self, sync: services.SyncReport) -> None:
        self.report.indexed += sync.added
        self.report.index_failed.extend(sync.failed)
        self.report.queued += sync.queued
        self.report.job = sync.job or self.report.job


def import_catalog(path: str | Path, **options) -> ImportReport:
    """Import a catalogue file; see :class:`CatalogImporter` for the options."""
    return CatalogImporter(path, **options).run()


def _count_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(buf.count(b"\n") for buf in iter(lambda: fh.read(1 << 20), b""))


def _chain(first, rest: Iterable):
    if first is not None:
        yield first
    yield from rest


__all__ = ["COLUMNS", "CatalogFileError", "CatalogImporter", "CatalogRow", "ImportReport", "RowError",
           "import_catalog", "parse_row", "read_records"]

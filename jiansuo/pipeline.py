"""Images → features → store: embed photos in batches and keep a vector store in step with a folder.

One loop embeds and commits everything that is indexed (:func:`add_files`: the CLI's folders, the
site's product photos, a worker's task), and one function embeds a single query
(:func:`embed_query`: the CLI, the site's pages and its API), so a photo gets the same vector
whichever way it comes in.

Decoding runs in a thread pool (Pillow releases the GIL while it decodes and resizes) while the
main thread runs batched inference, so the CPU is busy with both at once. Each batch group is
committed as one segment: an interrupted run keeps everything committed before it, and the next
run only embeds what is still missing or changed.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from PIL import Image

from .features import Extractor
from .images import Box, ImageError, iter_image_files, load_image
from .index import ItemInfo
from .search.store import VectorStore


@dataclass
class Report:
    """What an indexing run did: counts, and every skipped file with its reason."""

    indexed: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Images embedded per second over the whole run."""
        return self.indexed / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One human-readable paragraph, with the skipped files grouped by reason."""
        lines = [
            f"indexed {self.indexed}, unchanged {self.unchanged}, removed {self.removed}, "
            f"skipped {len(self.skipped)} in {self.seconds:.1f}s ({self.rate:.1f} images/s)"
        ]
        for path, reason in self.skipped:
            lines.append(f"  skipped {path}: {reason}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Prepared:
    """One decoded, preprocessed image ready for the network."""

    info: ItemInfo
    tensor: np.ndarray


def relative_id(path: Path, root: Path) -> str:
    """The id of an image: its path relative to the indexed folder, with '/' separators."""
    return path.relative_to(root).as_posix()


def decode_for(extractor: Extractor, source: bytes | str | os.PathLike) -> Image.Image:
    """Decode an image the way ``extractor`` wants it (JPEGs at reduced scale); raises ImageError."""
    return load_image(source, draft_size=extractor.draft_size)


def prepare(path: Path, item_id: str, extractor: Extractor, box: Box | None = None) -> Prepared:
    """Read, hash, decode and preprocess one file, or only ``box`` of it (runs in a worker thread).
    Raises ImageError."""
    try:
        st = path.stat()
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read file: {exc.strerror or exc}") from exc
    img = decode_for(extractor, data)
    info = ItemInfo(item_id, st.st_size, st.st_mtime_ns, hashlib.sha256(data).hexdigest())
    return Prepared(info, extractor.preprocess(box.crop(img) if box else img))


def embed_query(extractor: Extractor, source: bytes | str | os.PathLike | Image.Image,
                box: Box | None = None) -> np.ndarray:
    """The feature vector (dim,) of one query photo (file bytes, a path, or a decoded image), or of
    the part ``box`` of it, which is then prepared for the network like any photo.

    Bytes and paths are decoded as :func:`prepare` decodes catalogue files, so a catalogue photo
    used as a query gets exactly its stored vector. Raises ImageError for a bad image.
    """
    img = source if isinstance(source, Image.Image) else decode_for(extractor, source)
    return extractor.embed_batch(extractor.preprocess(box.crop(img) if box else img)[None])[0]


def embed_files(
    extractor: Extractor,
    files: Sequence[tuple[Path, str]],
    *,
    batch_size: int = 32,
    workers: int | None = None,
    progress: bool = True,
    skipped: list[tuple[str, str]] | None = None,
    box: Box | None = None,
) -> Iterator[tuple[list[ItemInfo], np.ndarray]]:
    """Yield (infos, vectors) batches for ``files`` ((path, id) pairs), decoding ahead in threads;
    with ``box``, only that part of each photo is embedded (queries).

    Files that fail to read or decode are appended to ``skipped`` as (id, reason) and left out.
    """
    from tqdm import tqdm

    workers = workers or max(2, os.cpu_count() or 1)
    skipped = skipped if skipped is not None else []
    bar = tqdm(total=len(files), unit="img", disable=not progress, file=sys.stderr, dynamic_ncols=True,
               smoothing=0.1)
    pending: list[Future] = []
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        it = iter(files)
        ahead = batch_size * 3  # enough decoded work queued to keep the network busy, bounded memory

        def fill() -> None:
            while len(pending) < ahead:
                try:
                    path, item_id = next(it)
                except StopIteration:
                    return
                pending.append(pool.submit(_prepare_or_error, path, item_id, extractor, box))

        try:
            fill()
            while pending:
                batch: list[Prepared] = []
                while pending and len(batch) < batch_size:
                    outcome = pending.pop(0).result()
                    fill()
                    if isinstance(outcome, Prepared):
                        batch.append(outcome)
                    else:
                        skipped.append(outcome)
                        bar.update(1)
                if batch:
                    vectors = extractor.embed_batch(np.stack([p.tensor for p in batch]))
                    bar.update(len(batch))
                    yield [p.info for p in batch], vectors
        finally:
            for f in pending:
                f.cancel()
            bar.close()


def _prepare_or_error(path: Path, item_id: str, extractor: Extractor, box: Box | None) -> Prepared | tuple[str, str]:
    try:
        return prepare(path, item_id, extractor, box)
    except ImageError as exc:
        return (item_id, str(exc))
    except Exception as exc:  # a decoder bug on one hostile file must not end the batch
        return (item_id, f"unexpected error: {type(exc).__name__}: {exc}")


def sync_folder(
    store: VectorStore,
    root: str | os.PathLike,
    extractor: Extractor,
    *,
    batch_size: int = 32,
    commit_every: int = 1024,
    workers: int | None = None,
    progress: bool = True,
    remove_missing: bool = True,
) -> Report:
    """Make ``store`` match the images under ``root``: embed new and changed files, drop deleted ones.

    A file counts as unchanged when its size and modification time match what the index recorded.
    Work is committed every ``commit_every`` images, so an interrupted run loses at most that much.
    """
    start = time.perf_counter()
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder")
    store.check_model(extractor.describe())
    known = store.items()
    todo: list[tuple[Path, str]] = []
    seen: set[str] = set()
    report = Report()
    for path in iter_image_files(root):
        item_id = relative_id(path, root)
        seen.add(item_id)
        try:
            st = path.stat()
        except OSError as exc:
            report.skipped.append((item_id, f"cannot read file: {exc.strerror or exc}"))
            continue
        old = known.get(item_id)
        if old is not None and old.size == st.st_size and old.mtime_ns == st.st_mtime_ns:
            report.unchanged += 1
        else:
            todo.append((path, item_id))
    if remove_missing:
        gone = [i for i in known if i not in seen]
        report.removed = store.remove(gone)
    # Files that failed before stay in the index's absence; a changed file that now fails to
    # decode is removed too, so the index never serves a vector for content it can't read.
    report.indexed = add_files(store, todo, extractor, batch_size=batch_size, commit_every=commit_every,
                               workers=workers, progress=progress, skipped=report.skipped)
    failed_known = [i for i, _ in report.skipped if i in known]
    report.removed += store.remove(failed_known)
    report.seconds = time.perf_counter() - start
    return report


def add_files(
    store: VectorStore,
    files: Sequence[tuple[Path, str]],
    extractor: Extractor,
    *,
    batch_size: int = 32,
    commit_every: int = 1024,
    workers: int | None = None,
    progress: bool = True,
    skipped: list[tuple[str, str]] | None = None,
) -> int:
    """Embed ``files`` ((path, id) pairs) and add them to ``store``, one commit per ``commit_every``
    images; returns how many were added (the unreadable ones are appended to ``skipped``)."""
    added = 0
    buf_infos: list[ItemInfo] = []
    buf_vecs: list[np.ndarray] = []

    def commit() -> None:
        nonlocal added
        if buf_infos:
            store.add(buf_infos, np.concatenate(buf_vecs))
            added += len(buf_infos)
            buf_infos.clear()
            buf_vecs.clear()

    for infos, vectors in embed_files(extractor, files, batch_size=batch_size, workers=workers,
                                      progress=progress, skipped=skipped):
        buf_infos.extend(infos)
        buf_vecs.append(vectors)
        if len(buf_infos) >= commit_every:
            commit()
    commit()
    return added


"""Labelled training data for a hash layer: which catalogue images carry which label.

Two sources, as ``jiansuo train-hash`` and ``jiansuo evaluate`` accept them:

- a folder ``LABELLED/<label>/<image>`` (any depth below the label folder);
- a CSV file of ``path,label`` rows (a header row ``path,label`` is optional), where ``path`` is an
  index id (the image's path relative to the indexed folder) or an image file (relative to the CSV).

Features come from the index when it already holds the image (same id and same file size and
modification time), so labelling an indexed catalogue costs no inference; other images are embedded.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..images import iter_image_files


@dataclass(frozen=True)
class Labelled:
    """One labelled image: an index id, or a file to embed (or both), and its label."""

    label: str
    id: str | None = None
    path: Path | None = None


def from_folder(root: str | os.PathLike) -> list[Labelled]:
    """Every image under ``root/<label>/``; its label is the name of its top folder under ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder")
    items = []
    for path in iter_image_files(root):
        parts = path.relative_to(root).parts
        if len(parts) >= 2:  # images directly in root have no label folder
            items.append(Labelled(parts[0], path=path))
    if not items:
        raise ValueError(f"no labelled images under {root}: expected {root}/<label>/<image> files")
    return items


def from_csv(csv_path: str | os.PathLike, store=None) -> list[Labelled]:
    """Rows of a ``path,label`` CSV; a path that is an id of ``store`` (a VectorStore) needs no file on disk."""
    csv_path = Path(csv_path)
    known = set(store.ids()) if store is not None else set()
    items = []
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        for n, row in enumerate(csv.reader(fh), 1):
            if not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#"):
                continue
            if len(row) < 2:
                raise ValueError(f"{csv_path}:{n}: expected 'path,label', got {','.join(row)!r}")
            path, label = row[0].strip(), row[1].strip()
            if n == 1 and (path.lower(), label.lower()) in {("path", "label"), ("id", "label")}:
                continue
            if not label:
                raise ValueError(f"{csv_path}:{n}: empty label for {path!r}")
            if path in known:
                items.append(Labelled(label, id=path))
            else:
                file = Path(path) if Path(path).is_absolute() else csv_path.parent / path
                if not file.is_file():
                    raise ValueError(f"{csv_path}:{n}: {path!r} is neither an image of the index nor a file")
                items.append(Labelled(label, path=file))
    if not items:
        raise ValueError(f"{csv_path} has no labelled rows")
    return items


def features_for(store, items: list[Labelled], extractor_factory, *, progress: bool = True,
                 skipped: list[tuple[str, str]] | None = None) -> tuple[np.ndarray, list[str]]:
    """(features (N, dim), labels) of ``items``: stored vectors where ``store`` has them, else embedded.

    ``extractor_factory()`` is only called when some image must be embedded. Files that cannot be
    decoded are left out and listed in ``skipped`` as (path, reason).
    """
    from ..pipeline import embed_files

    infos = store.items()
    root = store.meta().get("root")
    root = Path(root).resolve() if root else None
    stored_ids, stored_labels, to_embed = [], [], []
    for item in items:
        item_id = item.id or _indexed_id(item.path, root, infos)
        if item_id is not None:
            stored_ids.append(item_id)
            stored_labels.append(item.label)
        else:
            to_embed.append(item)
    feats = [store.get(stored_ids)] if stored_ids else []
    labels = list(stored_labels)
    if to_embed:
        extractor = extractor_factory()
        by_key = {str(i.path): i.label for i in to_embed}
        for batch_infos, vectors in embed_files(extractor, [(i.path, str(i.path)) for i in to_embed],
                                                progress=progress, skipped=skipped):
            feats.append(vectors)
            labels.extend(by_key[info.id] for info in batch_infos)
    if not feats:
        raise ValueError("none of the labelled images could be read")
    return np.concatenate(feats), labels


def _indexed_id(path: Path | None, root: Path | None, infos: dict) -> str | None:
    """The index id of ``path`` when the index holds that very file unchanged, else None."""
    if path is None or root is None:
        return None
    try:
        item_id = path.resolve().relative_to(root).as_posix()
    except ValueError:
        return None
    info = infos.get(item_id)
    if info is None:
        return None
    st = path.stat()
    return item_id if (info.size, info.mtime_ns) == (st.st_size, st.st_mtime_ns) else None

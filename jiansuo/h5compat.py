"""The original system's HDF5 feature file: ``dataset_1`` = features, ``dataset_2`` = file names as bytes.

Lets users of the old ``index.py`` / ``query_online.py`` scripts move their feature files in and out.
"""

from __future__ import annotations

import os

import numpy as np

from .atomic import atomic_path
from .index import IndexError_, ItemInfo
from .search.store import VectorStore


def export_h5(store: VectorStore, dest: str | os.PathLike, chunk: int = 10_000) -> int:
    """Write every vector of ``store`` to ``dest`` in the original layout; returns the count."""
    import h5py

    ids = store.ids()
    with atomic_path(dest) as tmp, h5py.File(tmp, "w") as h5:
        features = h5.create_dataset("dataset_1", shape=(len(ids), store.dim), dtype=np.float32)
        for start in range(0, len(ids), chunk):  # a chunk at a time: bounded memory for any size
            features[start : start + chunk] = store.get(ids[start : start + chunk])
        h5.create_dataset("dataset_2", data=np.array([i.encode("utf-8") for i in ids], dtype=object),
                          dtype=h5py.string_dtype("ascii" if all(i.isascii() for i in ids) else "utf-8"))
        h5.attrs["model"] = store.model.get("name", "")
    return len(ids)


def read_h5(source: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """(names, features) from an original-layout HDF5 file; raises IndexError_ if it is not one."""
    import h5py

    try:
        with h5py.File(source, "r") as h5:
            if "dataset_1" not in h5 or "dataset_2" not in h5:
                raise IndexError_(f"{source}: not a feature file (needs dataset_1 and dataset_2)")
            feats = np.asarray(h5["dataset_1"][...], dtype=np.float32)
            raw = h5["dataset_2"][...]
    except OSError as exc:
        raise IndexError_(f"{source}: cannot read HDF5 file ({exc})") from exc
    names = [n.decode("utf-8") if isinstance(n, (bytes, np.bytes_)) else str(n) for n in raw.ravel()]
    if feats.ndim != 2 or feats.shape[0] != len(names):
        raise IndexError_(f"{source}: {feats.shape[0]} features but {len(names)} names")
    return names, feats


def import_h5(source: str | os.PathLike, store: VectorStore) -> int:
    """Add the vectors of an original-layout file to ``store`` (built for the same model); returns the count."""
    from .features import l2_normalize

    names, feats = read_h5(source)
    if feats.shape[1] != store.dim:
        raise IndexError_(f"{source} holds {feats.shape[1]}-d features, the index's model makes {store.dim}-d")
    if len(set(names)) != len(names):
        raise IndexError_(f"{source}: duplicate file names")
    # The old index.py stored normalised vectors already; normalising again is harmless and protects
    # cosine scores from files written by other tools.
    store.add([ItemInfo(n) for n in names], l2_normalize(feats))
    return len(names)

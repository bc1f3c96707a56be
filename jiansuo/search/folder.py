"""The embedded backend: an index folder on this machine (:class:`jiansuo.index.Index`).

Searches run in this process: ``exact`` (every vector), ``ann`` (the HNSW graph kept in the folder,
:mod:`jiansuo.index.ann_store`) and ``hash`` (a trained hash layer's codes, :mod:`jiansuo.hashing.store`).
Several processes may read and write the folder (writes take its lock); for writers on several
machines, use PostgreSQL (:mod:`.pgvector`).
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence

import numpy as np

from ..hashing import store as hash_store
from ..index import ann_store
from ..index.store import Index, IndexError_, ItemInfo
from . import auto
from .ann import info_lines as ann_info_lines
from .base import Result, modes, search_index
from .store import Allowed, SqlRows, VectorStore


class FolderStore(VectorStore):
    """A :class:`VectorStore` over an index folder."""

    kind = "folder"

    def __init__(self, index: Index):
        self.index = index

    @classmethod
    def open(cls, path: str | os.PathLike, *, model: dict | None = None, dtype: str = "float32",
             check: bool = True) -> "FolderStore":
        """Open the index at ``path``; with ``model``, create it if missing and (``check``) check it otherwise."""
        if Index.exists(path) or model is None:
            store = cls(Index.open(path))
            if model is not None and check:
                try:
                    store.check_model(model)
                except IndexError_:
                    store.close()
                    raise
            return store
        return cls(Index.create(path, model, dtype=dtype))

    # ----------------------------------------------------------------- what it holds

    @property
    def location(self) -> str:
        return str(self.index.path)

    @property
    def model(self) -> dict:
        return self.index.model

    @property
    def dtype(self) -> np.dtype:
        return self.index.dtype

    @property
    def generation(self) -> int:
        """Increases with every commit (by any process)."""
        return self.index.generation

    def meta(self) -> dict[str, str]:
        return self.index.meta()

    def set_meta(self, key: str, value: str) -> None:
        self.index.set_meta(key, value)

    def __len__(self) -> int:
        return len(self.index)

    def items(self) -> dict[str, ItemInfo]:
        return self.index.items()

    def ids(self) -> list[str]:
        return self.index.ids()

    def contains(self, ids: Iterable[str]) -> set[str]:
        pos = self.index.positions()
        return {i for i in ids if i in pos}

    def get(self, ids: Sequence[str]) -> np.ndarray:
        return self.index.get_vectors(ids).astype(np.float32, copy=False)

    def sample(self, n: int, *, seed: int = 0) -> np.ndarray:
        ids = self.ids()
        if len(ids) > n:
            picks = np.sort(np.random.default_rng(seed).choice(len(ids), n, replace=False))
            ids = [ids[p] for p in picks]
        return self.get(ids)

    # ----------------------------------------------------------------- changing it

    def add(self, infos: Sequence[ItemInfo], vectors: np.ndarray) -> None:
        self.index.add(vectors, infos)

    def remove(self, ids: Iterable[str]) -> int:
        return self.index.remove(ids)

    def reset(self, model: dict) -> int:
        hash_store.remove_layer(self.index)  # trained on the old vectors: meaningless for new ones
        removed = self.index.reset(model)
        ann_store.forget(self.index)
        return removed

    def maintain(self, *, progress: bool = False) -> None:
        """Graph up to date and saved (when ``auto`` will use it or one exists), hash codes encoded."""
        if ann_store.read_manifest(self.index) is not None or self.resolve_mode("auto") == "ann":
            ann_store.ensure(self.index, persist=True, progress=progress)
        if hash_store.hash_info(self.index) is not None:
            hash_store.index_codes(self.index)

    # ----------------------------------------------------------------- searching

    def resolve_mode(self, mode: str) -> str:
        resolved = auto.resolve(mode, len(self.index), self.index.dtype)
        if resolved not in modes():
            raise ValueError(f"unknown search mode {mode!r}; choose one of: {', '.join(['auto', *sorted(modes())])}")
        return resolved

    def search(self, queries: np.ndarray, k: int = 10, *, mode: str = "auto", allowed: Allowed = None,
               min_score: float | None = None, **options) -> list[Result]:
        resolved = self.resolve_mode(mode)
        results = search_index(self.index, queries, k, mode=resolved, min_score=min_score,
                               allowed=self._mask(allowed), **options)
        for r in results:
            r.mode = resolved
        return results

    def _mask(self, allowed: Allowed) -> np.ndarray | None:
        """``allowed`` as a boolean mask over :meth:`ids`."""
        if allowed is None:
            return None
        if isinstance(allowed, SqlRows):
            raise TypeError("an index folder cannot run SQL: restrict the search with ids or a mask")
        if isinstance(allowed, np.ndarray) and allowed.dtype == bool:
            if allowed.shape != (len(self.index.ids()),):
                raise ValueError(f"allowed mask has {allowed.shape[0]} entries; the index has "
                                 f"{len(self.index.ids())} images")
            return allowed
        pos = self.index.positions()
        mask = np.zeros(len(pos), dtype=bool)
        rows = [pos[i] for i in allowed if i in pos]
        mask[rows] = True
        return mask

    # ----------------------------------------------------------------- hash layer

    def hash_layer(self):
        try:
            return hash_store.load_layer(self.index)
        except hash_store.NoHashLayer:
            return None

    def set_hash_layer(self, layer, *, progress: bool = False) -> int:
        hash_store.save_layer(self.index, layer)
        return len(hash_store.index_codes(self.index).ids)

    # ----------------------------------------------------------------- the rest

    def stats(self) -> dict:
        stats = self.index.stats()
        stats.update(kind=self.kind, ann=ann_store.info(self.index), hash=hash_store.hash_info(self.index),
                     auto_mode=self.resolve_mode("auto"), ann_threshold=auto.ann_threshold(self.index.dtype),
                     notes=ann_info_lines(self.index) + hash_store.info_lines(self.index))
        return stats

    def close(self) -> None:
        self.index.close()

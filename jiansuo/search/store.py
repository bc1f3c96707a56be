"""The catalogue's vectors behind one interface: :class:`VectorStore`, and :func:`open_store` to get one.

Two backends implement it:

- :class:`~jiansuo.search.folder.FolderStore`: an index folder on this machine (:mod:`jiansuo.index`),
  searched exactly, by its ANN graph or by its hash codes;
- :class:`~jiansuo.search.pgvector.PgVectorStore`: a PostgreSQL table with pgvector HNSW indexes,
  shared by any number of web processes and indexing workers on any number of machines.

The CLI and the site use nothing else, so a search means the same everywhere: ``mode="auto"`` scans
every vector of a small catalogue and uses the backend's approximate index from
:func:`jiansuo.search.auto.ann_threshold` images up.

Rows are images, named by an id (a path relative to the catalogue folder, or a photo file under the
site's media folder). ``allowed`` restricts a search to some of them: a collection of ids, a boolean
mask over :meth:`VectorStore.ids` (folder stores), or an :class:`SqlRows` query (PostgreSQL stores).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Collection, Iterable, Sequence, Union

import numpy as np

from .. import config
from ..index.store import IndexError_, ItemInfo
from .base import Result


@dataclass(frozen=True)
class SqlRows:
    """The ids an SQL query selects (one text column), e.g. the photos of products in a category.

    Only a PostgreSQL store accepts it: the restriction then runs inside the search's own query.
    ``sql`` uses ``%s`` placeholders for ``params``.
    """

    sql: str
    params: tuple = ()


#: What ``allowed`` may be: no restriction, ids, a mask over :meth:`VectorStore.ids`, or SQL.
Allowed = Union[None, Collection[str], np.ndarray, SqlRows]


class VectorStore(ABC):
    """Feature vectors of catalogue images, and the searches over them."""

    #: Short name of the backend ("folder", "pgvector").
    kind: str = ""

    # ----------------------------------------------------------------- what it holds

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the vectors are (a folder path, a database table)."""

    @property
    @abstractmethod
    def model(self) -> dict:
        """The description of the extractor the vectors came from (:meth:`Extractor.describe`)."""

    @property
    def dim(self) -> int:
        return int(self.model["dim"])

    @property
    @abstractmethod
    def dtype(self) -> np.dtype:
        """How vectors are stored (float32 or float16): decides ``auto``'s threshold."""

    def check_model(self, model: dict) -> None:
        """Raise :class:`IndexError_` unless ``model`` makes the same vectors as this store holds.

        A model differs when its name, version, dimension or preprocessing differ: mixing vectors
        of two of them would rank nonsense, so a mismatch is always refused.
        """
        keys = ("name", "version", "dim", "preprocessing", "precision", "quantization")
        # Stores made before precisions existed hold float32 vectors; int8 ones before versions, version 1.
        mine, theirs = ({k: m.get(k, "fp32" if k == "precision" else None) for k in keys} for m in (self.model, model))
        for m in (mine, theirs):
            if m["precision"] == "int8" and m["quantization"] is None:
                m["quantization"] = "1"
        if mine == theirs:
            return
        changed = [k for k in keys if mine[k] != theirs[k]]
        if "precision" in changed:  # only int8 has a quantisation: the precision is the difference
            changed.remove("quantization")
        if changed == ["quantization"]:
            raise IndexError_(
                f"{self.location} holds int8 vectors of an older quantised {mine['name']} network (quantisation "
                f"{mine['quantization']}; this version of jiansuo makes quantisation {theirs['quantization']}), "
                f"which differ slightly and cannot be mixed with new ones: re-index (jiansuo index PHOTOS "
                f"--index LOCATION embeds every image again; for the site, python -m jiansuo.web sync_index "
                f"--rebuild)."
            )
        if changed == ["precision"]:
            raise IndexError_(
                f"{self.location} holds {mine['precision']} vectors of {mine['name']}; {theirs['precision']} ones "
                f"differ slightly and cannot be mixed with them. Search and add with --precision "
                f"{mine['precision']} (the CLI does so by itself), or re-index with --rebuild --precision "
                f"{theirs['precision']}."
            )
        if changed == ["preprocessing"] or changed == ["version"] or set(changed) == {"version", "preprocessing"}:
            raise IndexError_(
                f"{self.location} was built with an older way of preparing images for "
                f"{mine['name']} (version {mine['version']}: {mine['preprocessing']!r}); this version of "
                f"jiansuo prepares them as {theirs['preprocessing']!r} (version {theirs['version']}). "
                f"Its vectors cannot be mixed with new ones: re-index (jiansuo index PHOTOS --index LOCATION "
                f"embeds every image again; for the site, python -m jiansuo.web sync_index --rebuild)."
            )
        raise IndexError_(
            f"{self.location} was built with model {mine['name']!r} (version {mine['version']}, {mine['dim']}-d); "
            f"it cannot be used with {theirs['name']!r} (version {theirs['version']}, {theirs['dim']}-d). "
            f"Use --model {mine['name']} or build a new index."
        )

    @abstractmethod
    def meta(self) -> dict[str, str]:
        """The store's own key/value notes (e.g. ``root``: the folder ids are relative to)."""

    @abstractmethod
    def set_meta(self, key: str, value: str) -> None:
        """Keep a note in the store."""

    @abstractmethod
    def __len__(self) -> int:
        """How many images have a vector."""

    @abstractmethod
    def items(self) -> dict[str, ItemInfo]:
        """Every stored image with what is known of its file (to tell whether it changed)."""

    @abstractmethod
    def ids(self) -> list[str]:
        """Ids of every stored image (for a folder store, in the order a mask refers to)."""

    @abstractmethod
    def contains(self, ids: Iterable[str]) -> set[str]:
        """Those of ``ids`` that have a vector."""

    def __contains__(self, item_id: str) -> bool:
        return bool(self.contains([item_id]))

    @abstractmethod
    def get(self, ids: Sequence[str]) -> np.ndarray:
        """Stored vectors (float32, (n, dim)) of ``ids`` in that order; KeyError names a missing id."""

    @abstractmethod
    def sample(self, n: int, *, seed: int = 0) -> np.ndarray:
        """Up to ``n`` stored vectors chosen at random (float32), e.g. to train a hash layer on."""

    # ----------------------------------------------------------------- changing it

    @abstractmethod
    def add(self, infos: Sequence[ItemInfo], vectors: np.ndarray) -> None:
        """Store (or replace) the vectors of these images in one commit."""

    @abstractmethod
    def remove(self, ids: Iterable[str]) -> int:
        """Forget these images (unknown ids are ignored); returns how many were stored."""

    @abstractmethod
    def reset(self, model: dict) -> int:
        """Forget every vector and hash layer; the store then holds vectors of ``model`` (a re-index
        after the model or its preprocessing changed). Returns how many vectors were forgotten."""

    def maintain(self, *, progress: bool = False) -> None:
        """Bring derived data (ANN graph, hash codes) up to date after indexing; cheap when nothing changed."""

    # ----------------------------------------------------------------- searching

    @abstractmethod
    def resolve_mode(self, mode: str) -> str:
        """The mode a search asked for ``mode`` runs in now (``auto`` resolved); ValueError if unknown."""

    @abstractmethod
    def search(self, queries: np.ndarray, k: int = 10, *, mode: str = "auto", allowed: Allowed = None,
               min_score: float | None = None, **options) -> list[Result]:
        """The ``k`` stored images most similar to each query vector (rows of ``queries``), best first.

        Scores are cosine similarities. ``options`` are the mode's own knobs (``ef``, ``candidates``,
        ``rerank``); a knob the mode does not have is a ValueError.
        """

    # ----------------------------------------------------------------- hash layer

    @abstractmethod
    def hash_layer(self):
        """The trained :class:`~jiansuo.hashing.layer.HashLayer` searches with ``mode="hash"`` use, or None."""

    @abstractmethod
    def set_hash_layer(self, layer, *, progress: bool = False) -> int:
        """Make ``layer`` current and compute every stored image's code with it; returns how many."""

    # ----------------------------------------------------------------- the rest

    @abstractmethod
    def stats(self) -> dict:
        """Counts and sizes for ``jiansuo info``."""

    def close(self) -> None:
        """Release what the store holds open."""

    def __enter__(self) -> "VectorStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def is_database_url(location: str | os.PathLike) -> bool:
    """True for a PostgreSQL URL (``postgresql://`` or ``postgres://``), false for a folder path."""
    return str(location).startswith(("postgresql://", "postgres://"))


def open_store(location: str | os.PathLike, *, model: dict | None = None, dtype: str = "float32",
               table: str | None = None) -> VectorStore:
    """The store at ``location``: an index folder path, or a PostgreSQL URL.

    With ``model`` (an extractor's ``describe()``), a missing store is created for it and an
    existing one is checked against it; without, the store must exist. ``dtype`` applies to a new
    folder (PostgreSQL always stores float16 ``halfvec``); ``table`` names a PostgreSQL store's table
    (default ``$JIANSUO_PG_TABLE``, else ``jiansuo_vectors``).
    """
    if is_database_url(location):
        from .pgvector import PgVectorStore

        return PgVectorStore.open(str(location), model=model, table=table or config.pg_table())
    from .folder import FolderStore

    return FolderStore.open(location, model=model, dtype=dtype)

"""Search modes over an index folder: every mode (exact, ann, hash) answers ``search(queries, k) -> [Result]``.

:class:`~jiansuo.search.folder.FolderStore` picks the mode (``auto`` included) and calls :func:`search_index`;
the CLI and the site use the store, never this module directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Hit:
    """One result: the image id (path relative to the indexed folder) and its cosine similarity."""

    id: str
    score: float


@dataclass
class Result:
    """The answer to one query: hits best first, how many catalogue images were examined, and the mode
    that ran (``auto`` resolved)."""

    hits: list[Hit] = field(default_factory=list)
    candidates: int = 0
    mode: str = ""


# mode name -> factory(index, **options) -> object with .search(queries, k, min_score, allowed) -> list[Result]
SEARCH_MODES: dict[str, Callable] = {}


def register_mode(name: str) -> Callable[[Callable], Callable]:
    """Decorator: make a searcher factory available as ``--mode name``."""

    def deco(factory: Callable) -> Callable:
        SEARCH_MODES[name] = factory
        return factory

    return deco


def modes() -> dict[str, Callable]:
    """Every registered mode, by name (importing the modules that register the built-in ones)."""
    from . import ann, exact, hashing  # noqa: F401

    return SEARCH_MODES


def search_index(
    index, queries: np.ndarray, k: int = 10, *, mode: str = "exact", min_score: float | None = None,
    allowed: np.ndarray | None = None, **options,
) -> list[Result]:
    """Search ``index`` for each row of ``queries`` (L2-normalised, (Q, dim)) with the named mode.

    ``allowed`` is an optional boolean mask over the index's rows (``index.vectors()`` order):
    rows where it is False are never returned (the site uses it for category and price filters).
    """
    try:
        factory = modes()[mode]
    except KeyError:
        raise ValueError(f"unknown search mode {mode!r}; choose one of: {', '.join(sorted(SEARCH_MODES))}") from None
    searcher = factory(index, **options)
    return searcher.search(np.atleast_2d(queries), k, min_score=min_score, allowed=allowed)

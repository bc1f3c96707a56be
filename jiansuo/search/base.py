"""The search interface: every mode (exact, hash, ann) answers ``search(queries, k) -> [Result]``."""

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
    """The answer to one query: hits best first, and how many catalogue images were examined."""

    hits: list[Hit] = field(default_factory=list)
    candidates: int = 0


# mode name -> factory(index, **options) -> object with .search(queries, k, min_score, allowed) -> list[Result]
SEARCH_MODES: dict[str, Callable] = {}


def register_mode(name: str) -> Callable[[Callable], Callable]:
    """Decorator: make a searcher factory available as ``--mode name``."""

    def deco(factory: Callable) -> Callable:
        SEARCH_MODES[name] = factory
        return factory

    return deco


def search_index(
    index, queries: np.ndarray, k: int = 10, *, mode: str = "exact", min_score: float | None = None,
    allowed: np.ndarray | None = None, **options,
) -> list[Result]:
    """Search ``index`` for each row of ``queries`` (L2-normalised, (Q, dim)) with the named mode.

    ``allowed`` is an optional boolean mask over the index's rows (``index.vectors()`` order):
    rows where it is False are never returned (the site uses it for category and price filters).
    """
    from . import ann, exact, hashing  # noqa: F401  (register their modes)

    try:
        factory = SEARCH_MODES[mode]
    except KeyError:
        raise ValueError(f"unknown search mode {mode!r}; choose one of: {', '.join(sorted(SEARCH_MODES))}") from None
    searcher = factory(index, **options)
    return searcher.search(np.atleast_2d(queries), k, min_score=min_score, allowed=allowed)

"""Search: query vectors → ranked catalogue images. Strategies (modes) share one interface."""

from .exact import ExactSearcher, top_k
from .base import Hit, Result, SEARCH_MODES, search_index

__all__ = ["ExactSearcher", "Hit", "Result", "SEARCH_MODES", "search_index", "top_k"]

"""Search: query vectors → ranked catalogue images, through one interface for every backend.

:func:`open_store` gives the :class:`VectorStore` of an index folder (:mod:`.folder`) or a
PostgreSQL table (:mod:`.pgvector`); :mod:`.auto` decides what ``mode="auto"`` means, the same for
both; :mod:`.exact`, :mod:`.ann` and :mod:`.hashing` are the folder's search modes.
"""

from .base import Hit, Result
from .exact import top_k
from .store import Allowed, SqlRows, VectorStore, is_database_url, open_store

__all__ = ["Allowed", "Hit", "Result", "SqlRows", "VectorStore", "is_database_url", "open_store", "top_k"]

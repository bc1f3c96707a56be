"""The catalogue index on disk: feature vectors plus what is known about each image."""

from .store import Index, IndexError_, ItemInfo

__all__ = ["Index", "IndexError_", "ItemInfo"]

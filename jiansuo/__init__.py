"""Jiansuo: search product catalogues by image."""

__version__ = "0.1.0"

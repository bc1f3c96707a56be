"""Feature extractors: images -> L2-normalised vectors. See :mod:`jiansuo.features.base`."""

from .base import (
    DEFAULT_MODEL,
    Extractor,
    ModelError,
    available_models,
    cached_extractor,
    get_extractor,
    l2_normalize,
    model_class,
)

__all__ = ["DEFAULT_MODEL", "Extractor", "ModelError", "available_models", "cached_extractor", "get_extractor", "l2_normalize", "model_class"]

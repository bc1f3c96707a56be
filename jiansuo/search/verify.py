"""Copy verification: is a stored image the very picture of a query (re-encoded, resized, cropped, turned)?

The global vector ranks a copy of a catalogue photo first nearly always, but not always: a small
(64-pixel) copy, a rotated copy with filled corners or a crop can land a few places down (as low as 16th), behind
photos of the same style. Its pixels settle it: the query and each of its first few results are
aligned and compared as :mod:`jiansuo.features.local` does for duplicate listings, with the same
disagreement limit, and the first result that is the query's own picture is moved to the top.

It reads the stored images' files, so it is a choice (``jiansuo search --verify``, the API's
``verify``): about 15 ms per result compared, the first being usually the copy itself.
``bench/quality.py`` measures it.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Callable

from ..features.local import LocalFeatures, compare, extract
from ..images import ImageError
from .base import Hit

#: Results of the plain ranking checked against the query's pixels (those within :data:`MAX_GAP` of the
#: first). bench/quality.py: a small or cropped copy of a flat wallpaper or a product shot can rank as low
#: as 16th behind pictures of its style (copy top-1 0.9937 with 5, 0.9956 with 16, no more with 32); a
#: query that is no copy pays for every one (~15 ms each, more for stored images not read before).
VERIFY_K = 16
#: A result is moved up only from within this cosine of the first: a copy scores near the top, and
#: far below it pixel agreement is more often a shared backdrop than the same picture.
MAX_GAP = 0.1
#: The first result stays when its pixels come this close (the same product re-photographed, a
#: re-listing, rather than another product).
KEEP_FIRST = 0.15
#: Local features of stored images kept in memory (an image is usually checked against few queries).
FEATURE_CACHE = 4096

#: A stored image's local features from its id, or the reason it cannot be read.
Features = Callable[[str], "LocalFeatures | str"]


def file_features(root: str | os.PathLike | None, cache: int = FEATURE_CACHE) -> Features:
    """Local features of stored images read from ``root / id`` (the indexed folder), the last ``cache``
    of them kept; an unreadable file gives the reason as a string."""
    base = Path(root) if root else Path()

    @lru_cache(maxsize=cache)
    def features(item: str) -> LocalFeatures | str:
        if not (base / item).is_file():
            return "file not found"
        try:
            return extract(base / item)
        except ImageError as exc:
            return str(exc)

    return features


def disagreement(a: LocalFeatures, b: LocalFeatures, max_disagreement: float) -> float:
    """Aligned disagreement of two images' local features (:func:`jiansuo.features.local.compare`),
    stopping as soon as an alignment comes within ``max_disagreement``."""
    return compare(a, b, enough=max_disagreement).disagreement


def copy_first(hits: list[Hit], query: LocalFeatures, features: Features, *, k: int = VERIFY_K,
               max_disagreement: float | None = None) -> list[Hit]:
    """``hits`` with the first of its first ``k`` that is a copy of ``query`` (local features of the
    query photo; at most ``max_disagreement`` differs once aligned, the duplicates rule's limit by
    default) moved to the top. Unchanged when none is, when the first is or nearly is
    (:data:`KEEP_FIRST`), and for results scoring more than :data:`MAX_GAP` below the first. Results
    whose file cannot be read are passed over. Measured by ``bench/quality.py`` (its --verify row)."""
    if max_disagreement is None:
        from .duplicates import DEFAULT_RULE

        max_disagreement = DEFAULT_RULE.max_disagreement
    for i, hit in enumerate(hits[:k]):
        if hits[0].score - hit.score > MAX_GAP:
            break
        stored = features(hit.id)
        if isinstance(stored, str):
            continue
        found = disagreement(query, stored, max(max_disagreement, KEEP_FIRST) if i == 0 else max_disagreement)
        if found <= max_disagreement:
            return [hit] + hits[:i] + hits[i + 1:]
        if i == 0 and found < KEEP_FIRST:
            return hits
    return hits

"""The results page's lens: which part of the query photo is searched (the ``box`` GET parameter).

At upload the site suggests a box (:func:`jiansuo.web.catalog.search.auto_box`) and the results
follow it, as a camera lens app does; the shopper may then move, resize or redraw it on the page.
A box travels in the results URL as ``?box=x0,y0,x1,y1`` (fractions of the photo, see
:class:`jiansuo.images.Box`), so every box is a plain, bookmarkable GET.
"""

from __future__ import annotations

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.http import Http404, QueryDict

from jiansuo.images import Box

from .photos import query_cache_key, query_photo_path
from .search import embed

#: The GET parameter naming the searched part of the query photo.
PARAM = "box"


def box_param(box: Box) -> str:
    """``box`` as the URL writes it: four numbers with 4 decimals (what the page's script sends too)."""
    return ",".join(f"{v:.4f}" for v in (box.x0, box.y0, box.x1, box.y1))


def requested_box(params: QueryDict) -> Box | None:
    """The box asked for by the GET parameters, or None (the whole photo); ValueError saying what is
    wrong with a malformed one."""
    text = params.get(PARAM, "").strip()
    return Box.parse(text) if text else None


def without_box(params: QueryDict) -> str:
    """The query string of ``params`` without the box (the same filters, the whole photo)."""
    rest = params.copy()
    rest.pop(PARAM, None)
    return rest.urlencode()


def frame(box: Box) -> dict[str, str]:
    """The box as CSS percentages of the photo (left, top, width, height), so the page draws it
    without its script too. Formatted here: a template would write the locale's decimal comma."""
    return {"left": f"{box.x0 * 100:.2f}", "top": f"{box.y0 * 100:.2f}",
            "width": f"{(box.x1 - box.x0) * 100:.2f}", "height": f"{(box.y1 - box.y0) * 100:.2f}"}


def box_vector(token: str, box: Box) -> np.ndarray:
    """The vector of the part ``box`` of the stored query photo ``token``, computed once per box and
    kept in the cache as long as the whole photo's vector; 404 when the photo has expired.

    The caller has checked that the session may open ``token``."""
    # The exact floats name the box: two boxes printed alike may still crop different pixels.
    key = query_cache_key(token, f":box:{box.x0!r},{box.y0!r},{box.x1!r},{box.y1!r}")
    vector = cache.get(key)
    if vector is None:
        path = query_photo_path(token)
        if path is None:
            raise Http404
        vector = embed(path, box=box).astype(np.float32)
        cache.set(key, vector, settings.JIANSUO_QUERY_TTL_SECONDS)
    return vector

"""Pages: the home page (upload a photo), search results, product pages with similar products.

A search by upload stores the (re-encoded) photo privately under a random token and redirects to
``/search/<token>/``, so changing the filters is a plain GET and the upload is not sent again.
Only the session that uploaded a photo can see its results. When a part of the photo matches the
catalogue better than the whole (a product on a wall, on a shelf), the upload redirects to the
results of that part, ``?box=x0,y0,x1,y1``, which the shopper may then move or redraw
(:mod:`jiansuo.web.catalog.lens`).
"""

from __future__ import annotations

from functools import wraps
from urllib.parse import urlencode

import numpy as np
from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.cache import cache
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import cache_control
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods

from jiansuo.web.history import store as history

from . import lens
from .forms import FilterForm, PhotoSearchForm, photo_vector
from .models import Product
from .photos import query_cache_key, query_photo_path, query_vector, save_query_photo, save_query_vector
from .search import auto_box, close_matches, embed, search_products, similar_products

# How many query tokens a session remembers (older searches fall out of its history).
_SESSION_QUERIES = 20


def can_search(user) -> bool:
    """Searching needs an account unless the operator made search public."""
    return settings.JIANSUO_PUBLIC_SEARCH or user.is_authenticated


def search_required(view):
    """Send visitors who may not search to the login page."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs):
        if not can_search(request.user):
            return redirect_to_login(request.get_full_path())
        return view(request, *args, **kwargs)

    return wrapped


@require_http_methods(["GET", "POST"])
def home(request: HttpRequest) -> HttpResponse:
    """The upload form (GET) and the upload itself (POST, then redirect to the results)."""
    if request.method == "POST":
        if not can_search(request.user):
            return redirect_to_login(request.get_full_path())
        form = PhotoSearchForm(request.POST, request.FILES)
        if form.is_valid():
            token = save_query_photo(form.cleaned_data["image"])
            vector = photo_vector(form.photo_bytes)
            save_query_vector(token, vector)
            _remember_query(request, token, vector)
            # The results URL carries only what differs from the defaults (filters, intent, verify).
            # (`v is not False`, not `in`: a lowest price of 0 equals False and stays.)
            params = {k: v for k, v in form.cleaned_data.items()
                      if k != "image" and v not in (None, "") and v is not False and (k, v) != ("intent", "both")}
            # The suggested box of the photo as stored (the one the results crop), as a lens shows it;
            # none when the copy check is asked for, which compares the whole photo.
            box = None if form.cleaned_data.get("verify") else auto_box(query_photo_path(token))
            if box is not None:
                params[lens.PARAM] = lens.box_param(box)
            history.record_search(request.user, token, params)  # history: keep a signed-in user's search
            return redirect(_results_url(token, urlencode(params)))
        status = 400
    else:
        form, status = PhotoSearchForm(), 200
    shown = Product.objects.filter(hidden=False)
    recent = shown.prefetch_related("images").order_by("-updated")[:12] if can_search(request.user) else []
    return render(request, "catalog/home.html", {"form": form, "recent": recent,
                                                 "product_count": shown.count()}, status=status)


@require_GET
@search_required
def results(request: HttpRequest, token: str) -> HttpResponse:
    """The products most similar to an uploaded photo, or to its part ``box``, filtered by the GET
    parameters; a malformed box is a 400 page saying what is wrong with it."""
    history.reopen_search(request, token)  # history: its owner may open a past search from any session
    vector = _query_vector(request, token)  # also the check that this session may open the token
    form = FilterForm(request.GET or None)
    context = {"token": token, "form": form, "hits": [], "weak": 0, "filtered": False,
               "upload_form": PhotoSearchForm(initial=request.GET),
               "whole_url": _results_url(token, lens.without_box(request.GET)),
               "clear_url": _results_url(token, "")}
    try:
        box = lens.requested_box(request.GET)
    except ValueError as exc:
        context["box_error"] = _("This box is not a part of your photo: %(reason)s.") % {"reason": exc}
        return render(request, "catalog/results.html", context, status=400)
    if box is not None:
        vector = lens.box_vector(token, box)
        context.update(box=lens.box_param(box), box_frame=lens.frame(box),
                       clear_url=_results_url(token, urlencode({lens.PARAM: lens.box_param(box)})))
    filters = form.filters()
    intent, verify = form.ranking()
    # The copy check compares the whole photo's pixels, as the CLI's and the API's: not a part of it.
    photo = query_photo_path(token) if verify and box is None else None
    context["verify_off"] = verify and box is not None
    # Only close matches are shown (JIANSUO_MIN_SIMILARITY); "no close match" when none is.
    hits, weak = close_matches(search_products(vector, settings.JIANSUO_RESULTS, filters, intent=intent,
                                               verify_photo=photo.read_bytes() if photo else None))
    context.update(hits=hits, weak=weak, filtered=filters.active)
    return render(request, "catalog/results.html", context)


def _results_url(token: str, query: str) -> str:
    url = reverse("catalog:results", args=[token])
    return f"{url}?{query}" if query else url


@require_GET
@search_required
@cache_control(private=True, max_age=3600)
def query_image(request: HttpRequest, token: str) -> FileResponse:
    """The uploaded query photo, for the session that uploaded it."""
    history.reopen_search(request, token)  # history: its owner may open a past search from any session
    if token not in request.session.get("queries", []):
        raise Http404
    path = query_photo_path(token)
    if path is None:
        raise Http404
    return FileResponse(open(path, "rb"), content_type="image/jpeg")


@require_GET
@search_required
def product(request: HttpRequest, item_id: str) -> HttpResponse:
    """One product, its photos, and the products that look most like it."""
    item = get_object_or_404(Product.objects.prefetch_related("images"), item_id=item_id, hidden=False)
    similar, indexed = similar_products(item, settings.JIANSUO_RESULTS // 2)
    similar, weak = close_matches(similar)
    return render(request, "catalog/product.html", {"product": item, "similar": similar, "weak": weak,
                                                    "indexed": indexed})


# ------------------------------------------------------------------ query bookkeeping


def _remember_query(request: HttpRequest, token: str, vector: np.ndarray) -> None:
    queries = [t for t in request.session.get("queries", []) if t != token]
    request.session["queries"] = (queries + [token])[-_SESSION_QUERIES:]
    cache.set(query_cache_key(token), vector.astype(np.float32), settings.JIANSUO_QUERY_TTL_SECONDS)


def _query_vector(request: HttpRequest, token: str) -> np.ndarray:
    """The query's vector, computed once at upload: from the cache, else from its saved file. 404 for
    others' tokens and expired ones."""
    if token not in request.session.get("queries", []):
        raise Http404
    vector = cache.get(query_cache_key(token))
    if vector is None:
        vector = query_vector(token)
        if vector is None:
            photo = query_photo_path(token)
            if photo is None:
                raise Http404
            # Saved by another network (the site's model or its quantisation changed): embedded again.
            vector = embed(photo.read_bytes())
            save_query_vector(token, vector)
        cache.set(query_cache_key(token), vector, settings.JIANSUO_QUERY_TTL_SECONDS)
    return vector

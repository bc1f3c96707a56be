"""My searches: the list, a past search's photo, deleting one or all. Only ever the signed-in user's own."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from . import store

#: Past searches per page of the list.
PER_PAGE = 24


@require_GET
@login_required
def history_list(request: HttpRequest) -> HttpResponse:
    """The user's past searches, newest first, each with its photo and a link to its results."""
    store.purge_expired(limit=store.LAZY_PURGE_BATCH)
    page = Paginator(store.live_entries(request.user), PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "history/list.html", {"page": page, "entries": page.object_list,
                                                 "days": settings.JIANSUO_HISTORY_DAYS})


@require_GET
@login_required
@cache_control(private=True, max_age=3600)
def photo(request: HttpRequest, token: str) -> FileResponse:
    """The query photo of one of the user's past searches; 404 for anyone else's."""
    get_object_or_404(store.live_entries(request.user), token=token)
    path = store.entry_photo_path(token)
    if path is None:
        raise Http404
    return FileResponse(open(path, "rb"), content_type="image/jpeg")


@require_POST
@login_required
def delete(request: HttpRequest, token: str) -> HttpResponse:
    """Delete one past search and its photo; 404 when it is not the user's."""
    get_object_or_404(store.live_entries(request.user), token=token)
    store.delete_entries(request, store.live_entries(request.user).filter(token=token))
    messages.success(request, _("The search was deleted."))
    return redirect("history:list")


@require_http_methods(["GET", "POST"])
@login_required
def delete_all(request: HttpRequest) -> HttpResponse:
    """Ask (GET), then delete (POST) every past search of the user."""
    # Expired ones too: "all" must leave nothing behind, whether or not the purge got to it yet.
    entries = request.user.search_history.all()
    if request.method == "GET":
        return render(request, "history/delete_all.html", {"count": store.live_entries(request.user).count()})
    count = store.delete_entries(request, entries)
    messages.success(request, ngettext("%(n)d search was deleted.", "%(n)d searches were deleted.", count)
                     % {"n": count})
    return redirect("history:list")

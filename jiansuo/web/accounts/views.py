"""Account pages not provided by django.contrib.auth: registration, the account overview, the profile photo."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from rest_framework.authtoken.models import Token

from .forms import ProfilePhotoForm, RegisterForm
from .profile import get_profile, profile_photo_path, remove_profile_photo, save_profile_photo


@require_http_methods(["GET", "POST"])
def register(request: HttpRequest) -> HttpResponse:
    """Create an account and log it in."""
    if request.user.is_authenticated:
        return redirect("catalog:home")
    form = RegisterForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, _("Welcome, %(name)s! Your account is ready.") % {"name": user.get_username()})
        return redirect("catalog:home")
    return render(request, "registration/register.html", {"form": form},
                  status=400 if request.method == "POST" else 200)


@login_required
def account(request: HttpRequest) -> HttpResponse:
    """The account overview: name, profile photo, links to change the password, the API token."""
    return _account_page(request, ProfilePhotoForm())


def _account_page(request: HttpRequest, photo_form: ProfilePhotoForm, status: int = 200) -> HttpResponse:
    token = Token.objects.filter(user=request.user).first()
    profile = get_profile(request.user)
    return render(request, "registration/account.html", {
        "token": token, "profile": profile if profile_photo_path(profile) else None, "photo_form": photo_form,
    }, status=status)


@login_required
@require_POST
def new_token(request: HttpRequest) -> HttpResponse:
    """Create (or replace) the user's API token."""
    Token.objects.filter(user=request.user).delete()
    Token.objects.create(user=request.user)
    messages.success(request, _("A new API token was created; the old one no longer works."))
    return redirect("account")


@login_required
@require_POST
def set_photo(request: HttpRequest) -> HttpResponse:
    """Upload a new profile photo (checked and re-encoded like every upload)."""
    form = ProfilePhotoForm(request.POST, request.FILES)
    if not form.is_valid():
        return _account_page(request, form, status=400)
    save_profile_photo(request.user, form.cleaned_data["photo"])
    messages.success(request, _("Your profile photo was saved."))
    return redirect("account")


@login_required
@require_POST
def remove_photo(request: HttpRequest) -> HttpResponse:
    """Remove the profile photo."""
    if remove_profile_photo(request.user):
        messages.success(request, _("Your profile photo was removed."))
    return redirect("account")


@require_GET
@login_required
@cache_control(private=True, max_age=7 * 24 * 3600)
def photo(request: HttpRequest, key: str) -> FileResponse:
    """The signed-in user's own profile photo; ``key`` changes with every new photo. 404 for anyone else's."""
    profile = get_profile(request.user)
    path = profile_photo_path(profile)
    if path is None or profile.photo_token != key:
        raise Http404
    return FileResponse(open(path, "rb"), content_type="image/jpeg")

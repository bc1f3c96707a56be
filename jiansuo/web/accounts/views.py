"""Account pages not provided by django.contrib.auth: registration and the account overview."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST
from rest_framework.authtoken.models import Token

from .forms import RegisterForm


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
    """The account overview: name, links to change the password, the API token."""
    token = Token.objects.filter(user=request.user).first()
    return render(request, "registration/account.html", {"token": token})


@login_required
@require_POST
def new_token(request: HttpRequest) -> HttpResponse:
    """Create (or replace) the user's API token."""
    Token.objects.filter(user=request.user).delete()
    Token.objects.create(user=request.user)
    messages.success(request, _("A new API token was created; the old one no longer works."))
    return redirect("account")

"""The registration form: Django's, plus an e-mail address for password resets."""

from __future__ import annotations

from django import forms
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.models import User
from django.utils.translation import gettext_lazy as _


class RegisterForm(UserCreationForm):
    email = forms.EmailField(label=_("E-mail address"), required=False,
                             help_text=_("Optional; needed to reset a forgotten password."))

    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username", "email")

"""Account forms: registration (Django's, plus an e-mail address) and password reset, both with a captcha."""

from __future__ import annotations

from django import forms
from django.contrib.auth.forms import PasswordResetForm, UserCreationForm
from django.contrib.auth.models import User
from django.utils.translation import gettext_lazy as _
from PIL import Image

from jiansuo.web.catalog.forms import read_photo

from .captcha import captcha_field


class RegisterForm(UserCreationForm):
    email = forms.EmailField(label=_("E-mail address"), required=False,
                             help_text=_("Optional; needed to reset a forgotten password."))
    captcha = captcha_field()

    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username", "email")


class CaptchaPasswordResetForm(PasswordResetForm):
    """Django's password-reset form; the captcha keeps scripts from mailing reset links in bulk."""

    captcha = captcha_field()


class ProfilePhotoForm(forms.Form):
    """A new profile photo; checked like every upload (see :func:`.profile.save_profile_photo`)."""

    photo = forms.FileField(label=_("Profile photo"), widget=forms.ClearableFileInput(attrs={"accept": "image/*"}))

    def clean_photo(self) -> Image.Image:
        return read_photo(self.cleaned_data["photo"])

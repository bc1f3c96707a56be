from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path

from . import views
from .forms import CaptchaPasswordResetForm

urlpatterns = [
    path("register/", views.register, name="register"),
    path("", views.account, name="account"),
    path("token/", views.new_token, name="new_token"),
    path("photo/", views.set_photo, name="set_profile_photo"),
    path("photo/remove/", views.remove_photo, name="remove_profile_photo"),
    re_path(r"^photo/(?P<key>[0-9a-f]{32})\.jpg$", views.photo, name="profile_photo"),
    # Before django.contrib.auth's own: the same URL and name, with the captcha.
    path("password_reset/", auth_views.PasswordResetView.as_view(form_class=CaptchaPasswordResetForm),
         name="password_reset"),
    # login, logout, password_change(_done), password_reset(_done, _confirm, _complete)
    path("", include("django.contrib.auth.urls")),
]

from django.urls import include, path

from . import views

urlpatterns = [
    path("register/", views.register, name="register"),
    path("", views.account, name="account"),
    path("token/", views.new_token, name="new_token"),
    # login, logout, password_change(_done), password_reset(_done, _confirm, _complete)
    path("", include("django.contrib.auth.urls")),
]

from django.urls import path, re_path

from . import views

app_name = "history"

urlpatterns = [
    path("", views.history_list, name="list"),
    path("delete/", views.delete_all, name="delete_all"),
    re_path(r"^(?P<token>[0-9a-f]{32})/photo\.jpg$", views.photo, name="photo"),
    re_path(r"^(?P<token>[0-9a-f]{32})/delete/$", views.delete, name="delete"),
]

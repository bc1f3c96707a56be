from django.urls import path, re_path

from . import views

app_name = "catalog"

urlpatterns = [
    path("", views.home, name="home"),
    re_path(r"^search/(?P<token>[0-9a-f]{32})/$", views.results, name="results"),
    re_path(r"^search/(?P<token>[0-9a-f]{32})/photo\.jpg$", views.query_image, name="query_image"),
    path("products/<str:item_id>/", views.product, name="product"),
]

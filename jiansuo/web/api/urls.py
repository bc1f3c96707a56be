from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.authtoken.views import obtain_auth_token
from rest_framework.permissions import AllowAny

from . import docs, views
from .errors import json_not_found

urlpatterns = [
    path("search", views.search, name="api-search"),
    path("products/<str:item_id>", views.product, name="api-product"),
    path("products/<str:item_id>/similar", views.similar, name="api-similar"),
    path("token", obtain_auth_token, name="api-token"),
    path("schema", SpectacularAPIView.as_view(permission_classes=[AllowAny]), name="api-schema"),
    path("docs", docs.SwaggerView.as_view(), name="api-docs"),
    path("redoc", docs.RedocView.as_view(), name="api-redoc"),
    path("redoc/redoc.standalone.js", docs.redoc_bundle, name="api-redoc-bundle"),
    # Anything else under /api/ is a JSON 404, like every other API error.
    re_path(r"^.*$", json_not_found),
]

"""URLs of the whole site: pages, accounts, admin, the JSON API and its OpenAPI description."""

from django.conf import settings
from django.contrib import admin
from django.contrib.staticfiles.views import serve as serve_static
from django.urls import include, path, re_path
from django.views.static import serve as serve_media

urlpatterns = [
    path("", include("jiansuo.web.catalog.urls")),
    path("accounts/", include("jiansuo.web.accounts.urls")),
    path("history/", include("jiansuo.web.history.urls")),
    path("captcha/", include("captcha.urls")),
    path("api/", include("jiansuo.web.api.urls")),
    path("admin/", admin.site.urls),
    path("i18n/", include("django.conf.urls.i18n")),
]

# JSON under /api/, the site's pages elsewhere (see jiansuo.web.api.errors).
handler400 = "jiansuo.web.api.errors.bad_request"
handler403 = "jiansuo.web.api.errors.permission_denied"
handler404 = "jiansuo.web.api.errors.page_not_found"
handler500 = "jiansuo.web.api.errors.server_error"



def _media(request, path: str):
    # MEDIA_ROOT is read per request, not when the URLs are loaded.
    return serve_media(request, path, document_root=settings.MEDIA_ROOT)


if settings.JIANSUO_SERVE_FILES:
    # A single-machine install (the demo) serves its own files; behind a web server, that server does.
    urlpatterns += [
        re_path(r"^%s(?P<path>.*)$" % settings.STATIC_URL.lstrip("/"), serve_static, {"insecure": True}),
        re_path(r"^%s(?P<path>.*)$" % settings.MEDIA_URL.lstrip("/"), _media),
    ]

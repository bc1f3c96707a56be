from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class HistoryConfig(AppConfig):
    name = "jiansuo.web.history"
    label = "history"
    verbose_name = _("Search history")

    def ready(self) -> None:
        from . import store  # noqa: F401  (connects the signal that deletes an entry's photo files)

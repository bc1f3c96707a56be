from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "jiansuo.web.api"
    label = "jiansuo_api"
    verbose_name = "API"

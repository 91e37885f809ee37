from django.apps import AppConfig


class InternalConfigConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "internal_config"
    verbose_name = "Internal configuration"

    def ready(self) -> None:
        from internal_config import signals  # noqa: F401

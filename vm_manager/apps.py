from django.apps import AppConfig


class VmManagerConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "vm_manager"
    verbose_name = "VM manager"

    def ready(self) -> None:
        from vm_manager import signals  # noqa: F401
        from vm_manager.ide import revocation  # noqa: F401

from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Signal receivers, system checks and error codes register on import.
        from billing import checks, errors, signals  # noqa: F401

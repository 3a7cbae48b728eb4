from django.apps import AppConfig


class ImagingConfig(AppConfig):
    name = "imaging"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # System checks and error codes register on import, so the registry (and the
        # docs built from it) is complete before any URL is resolved.
        from imaging import audit_checks, checks, errors, render_errors  # noqa: F401

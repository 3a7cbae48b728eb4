from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"

    def ready(self) -> None:
        # drf-spectacular finds authentication extensions by subclass registration,
        # which happens on import.
        from accounts import schema  # noqa: F401

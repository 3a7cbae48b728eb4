"""Users sign in with e-mail; API keys are stored only as a SHA-256 hash plus display parts."""

from __future__ import annotations

from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.db import models
from django.db.models import Q
from django.utils import timezone


class UserManager(BaseUserManager):
    use_in_migrations = True

    def _create_user(self, email: str, password: str | None, **extra):
        if not email:
            raise ValueError("an e-mail address is required")
        email = self.normalize_email(email).lower()
        user = self.model(email=email, **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **extra):
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra)

    def get_by_natural_key(self, email: str):
        # Addresses are stored lower-case, so sign-in must not depend on how the
        # user capitalises theirs (PostgreSQL compares case-sensitively).
        return self.get(email=email.strip().lower())

    def create_superuser(self, email: str, password: str | None = None, **extra):
        extra["is_staff"] = True
        extra["is_superuser"] = True
        return self._create_user(email, password, **extra)


class User(AbstractUser):
    """E-mail is the login; there is no separate username."""

    username = None  # type: ignore[assignment]
    email = models.EmailField("e-mail address", unique=True)
    # Set once the owner opens the signed link we mailed (accounts.verification); the
    # sign-up credits wait for it.
    email_verified_at = models.DateTimeField("e-mail verified at", null=True, blank=True)

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    objects = UserManager()  # type: ignore[misc]

    def __str__(self) -> str:
        return self.email

    @property
    def email_verified(self) -> bool:
        return self.email_verified_at is not None


class ApiKey(models.Model):
    """An API key. The secret itself is never stored: only its SHA-256 and display parts."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    hashed_key = models.CharField(max_length=64, unique=True)
    display_prefix = models.CharField(max_length=24)
    last_four = models.CharField(max_length=4)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["user"], condition=Q(revoked_at__isnull=True), name="active_keys_by_user")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.masked})"

    @property
    def masked(self) -> str:
        return f"{self.display_prefix}…{self.last_four}"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

"""Forms for signup and API key creation."""

from __future__ import annotations

from django import forms
from django.contrib.auth import password_validation
from django.contrib.auth.forms import AuthenticationForm

from accounts.keys import NAME_MAX_LENGTH
from accounts.models import User


class SignupForm(forms.Form):
    email = forms.EmailField(
        label="E-mail", max_length=254,
        widget=forms.EmailInput(attrs={"autocomplete": "email", "autofocus": True}),
    )
    password = forms.CharField(
        label="Password", strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text=password_validation.password_validators_help_text_html(),
    )

    def clean_email(self) -> str:
        # Stored e-mail addresses are lower-case (UserManager), so this is the one check.
        email = User.objects.normalize_email(self.cleaned_data["email"]).lower()
        if User.objects.filter(email=email).exists():
            raise forms.ValidationError(
                "An account with this e-mail address already exists. Sign in instead, "
                "or reset its password.", code="duplicate_email",
            )
        return email

    def clean(self) -> dict:
        cleaned = super().clean()
        password = cleaned.get("password")
        if password:
            try:
                password_validation.validate_password(
                    password, User(email=cleaned.get("email", ""))
                )
            except forms.ValidationError as error:
                self.add_error("password", error)
        return cleaned


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(
        label="Key name", max_length=NAME_MAX_LENGTH,
        help_text="Where the key will be used, e.g. “production server”.",
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )


class EmailAuthenticationForm(AuthenticationForm):
    """Django's login form, with an e-mail input (the username *is* the e-mail)."""

    username = forms.EmailField(
        label="E-mail", max_length=254,
        widget=forms.EmailInput(attrs={"autocomplete": "email", "autofocus": True}),
    )

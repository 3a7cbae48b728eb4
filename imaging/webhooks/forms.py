"""The dashboard's form for adding a webhook endpoint."""

from __future__ import annotations

from django import forms

from imaging.webhooks import delivery
from imaging.webhooks.models import SUBSCRIBABLE_EVENTS


class EndpointForm(forms.Form):
    url = forms.CharField(label="Endpoint URL", max_length=2048, strip=True,
                          widget=forms.URLInput(attrs={"placeholder": "https://example.com/pixelapi/webhooks",
                                                       "spellcheck": "false", "autocomplete": "off"}))
    description = forms.CharField(label="Description (optional)", max_length=200, required=False)
    events = forms.MultipleChoiceField(
        label="Events", choices=[(e.value, e.value) for e in SUBSCRIBABLE_EVENTS],
        initial=[e.value for e in SUBSCRIBABLE_EVENTS], widget=forms.CheckboxSelectMultiple,
        error_messages={"required": "Choose at least one event."})

    def clean_url(self) -> str:
        url = self.cleaned_data["url"]
        try:
            delivery.check_url(url)
        except delivery.UrlRefused as refused:
            raise forms.ValidationError(str(refused), code="url_refused") from None
        return url

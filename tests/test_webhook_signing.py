"""Webhook signatures: Stripe-style ``t=…,v1=…`` headers, key rotation, and the docs' snippet.

The verification snippet is taken from the rendered docs page and executed, so the
docs cannot drift from what we send.
"""

from __future__ import annotations

import html
import re
import time
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from imaging.webhooks import signing
from imaging.webhooks.models import WebhookEndpoint

BODY = b'{"data":{"object":{"id":"rnd_1"}},"id":"evt_1","type":"render.succeeded"}'


def docs_snippet() -> dict:
    page = Client().get("/docs/")
    assert page.status_code == 200
    match = re.search(r'<pre data-testid="webhook-verify-python"><code>(.*?)</code></pre>',
                      page.content.decode(), re.S)
    assert match, "the docs page has no webhook verification snippet"
    namespace: dict = {}
    exec(compile(html.unescape(match.group(1)), "docs-snippet", "exec"), namespace)  # noqa: S102
    return namespace


def rotated(expires_in: timedelta) -> WebhookEndpoint:
    return WebhookEndpoint(secret="whsec_new", previous_secret="whsec_old",
                           previous_secret_expires_at=timezone.now() + expires_in)


def test_a_signature_verifies_with_the_secret_it_was_made_with():
    header = signing.signature_header(["whsec_abc"], BODY)
    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", header)
    assert signing.verify("whsec_abc", BODY, header)


def test_the_signature_is_an_hmac_of_the_timestamp_a_dot_and_the_body():
    import hashlib
    import hmac

    header = signing.signature_header(["whsec_abc"], BODY, timestamp=1_767_225_600)
    expected = hmac.new(b"whsec_abc", b"1767225600." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1767225600,v1={expected}"


def test_a_tampered_body_another_secret_or_an_old_timestamp_is_refused():
    header = signing.signature_header(["whsec_abc"], BODY)
    assert not signing.verify("whsec_abc", BODY.replace(b"rnd_1", b"rnd_2"), header)
    assert not signing.verify("whsec_other", BODY, header)
    stale = signing.signature_header(["whsec_abc"], BODY, timestamp=int(time.time()) - 301)
    assert not signing.verify("whsec_abc", BODY, stale)
    assert not signing.verify("whsec_abc", BODY, "garbage")


def test_during_a_rotation_each_delivery_is_signed_with_both_secrets():
    endpoint = rotated(timedelta(hours=1))
    assert endpoint.signing_secrets() == ["whsec_new", "whsec_old"]
    header = signing.signature_header(endpoint.signing_secrets(), BODY)
    assert header.count("v1=") == 2
    assert signing.verify("whsec_new", BODY, header)
    assert signing.verify("whsec_old", BODY, header)


def test_an_expired_previous_secret_no_longer_signs():
    endpoint = rotated(timedelta(seconds=-1))
    assert endpoint.signing_secrets() == ["whsec_new"]
    header = signing.signature_header(endpoint.signing_secrets(), BODY)
    assert header.count("v1=") == 1
    assert not signing.verify("whsec_old", BODY, header)


@pytest.mark.django_db
def test_the_docs_snippet_accepts_our_signatures_and_refuses_tampered_bodies():
    verify_signature = docs_snippet()["verify_signature"]
    header = signing.signature_header(["whsec_abc"], BODY)
    assert verify_signature(BODY, header, "whsec_abc") is True
    assert verify_signature(BODY + b" ", header, "whsec_abc") is False
    assert verify_signature(BODY, header, "whsec_wrong") is False
    assert verify_signature(BODY, "t=abc,v1=00", "whsec_abc") is False
    stale = signing.signature_header(["whsec_abc"], BODY, timestamp=int(time.time()) - 600)
    assert verify_signature(BODY, stale, "whsec_abc") is False


@pytest.mark.django_db
def test_the_docs_snippet_accepts_either_secret_during_a_rotation():
    verify_signature = docs_snippet()["verify_signature"]
    endpoint = rotated(timedelta(hours=1))
    header = signing.signature_header(endpoint.signing_secrets(), BODY)
    assert verify_signature(BODY, header, "whsec_new") and verify_signature(BODY, header, "whsec_old")


@pytest.mark.django_db
def test_the_docs_tell_receivers_to_dedupe_by_event_id():
    text = Client().get("/docs/").content.decode()
    assert 'id="webhooks"' in text and "dedupe by the event id" in text

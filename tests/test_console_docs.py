"""The developer docs: public, generated from the API's own serializers and error registry."""

from __future__ import annotations

import html
import re

from django.test import Client

import pytest

from accounts.keys import issue_key
from imaging.dashboard import snippets
from imaging.models import Render
from imaging.serializers import RenderRequestSerializer, RenderSerializer
from platform_site.api_errors import REGISTRY, register
from tests.helpers_render import make_user


def docs_page(client: Client) -> str:
    response = client.get("/docs/")
    assert response.status_code == 200
    return response.content.decode()


def snippet(page: str, testid: str) -> str:
    return html.unescape(re.search(rf'data-testid="{testid}"><code>(.*?)</code>', page, re.S).group(1))


def table_rows(page: str, testid: str) -> list[str]:
    table = re.search(rf'data-testid="{testid}">(.*?)</table>', page, re.S).group(1)
    return re.findall(r'<th scope="row"><code>([^<]+)</code></th>', table)


def test_the_docs_are_public_and_explain_authentication(client, db):
    page = docs_page(client)
    assert "Authorization: Bearer pxl_live_" in page
    assert "Sign up" in page


def test_the_docs_list_every_registered_error_code_with_its_status(client, db):
    page = docs_page(client)

    listed = re.findall(r'data-error-code="([a-z_]+)"', page)
    assert sorted(listed) == sorted(REGISTRY) and len(listed) == len(set(listed))
    for entry in REGISTRY.values():
        row = re.search(rf'<tr id="error-{entry.code}".*?</tr>', page, re.S).group(0)
        assert f">{entry.status}<" in row
        assert re.sub(r"<[^>]+>", "", row).count(html.escape(entry.description).replace("`", "")) == 1
    # The codes of every app are there, not just the core ones.
    for code in ("insufficient_credits", "image_url_forbidden", "render_failed", "idempotency_key_reused"):
        assert code in listed


def test_a_newly_registered_code_appears_without_editing_the_template(client, db):
    register("console_docs_test_code", 418, "test_error", "Only registered by this test.")
    try:
        page = docs_page(client)
    finally:
        del REGISTRY["console_docs_test_code"]
    assert 'data-error-code="console_docs_test_code"' in page and "Only registered by this test." in page


def test_the_docs_describe_every_request_field_and_every_render_field(client, db):
    page = docs_page(client)

    assert table_rows(page, "request-fields") == list(RenderRequestSerializer().fields)
    assert table_rows(page, "render-fields") == list(RenderSerializer().fields)
    render_table = re.search(r'data-testid="render-fields">(.*?)</table>', page, re.S).group(1)
    assert render_table.count('<td data-label="Meaning"></td>') == 0  # no field left unexplained
    assert "at most 2,000 characters" in page and "one of png, jpeg, webp" in page


def test_the_quickstart_uses_the_signed_in_users_key_prefix_but_never_a_secret(db):
    user = make_user("dev@example.com")
    key, raw = issue_key(user, "laptop")
    client = Client()
    client.force_login(user)

    page = docs_page(client)

    assert raw not in page and raw[len(key.display_prefix):] not in page
    assert f"starts with <code>{key.display_prefix}</code>" in page
    curl = snippet(page, "curl-example")
    assert f"“laptop” (it starts with {key.display_prefix}…)" in curl
    assert "#   export PIXELAPI_KEY=<your key>" in curl
    assert '-H "Authorization: Bearer $PIXELAPI_KEY"' in curl and "Idempotency-Key" in curl
    assert "http://testserver/v1/image/replace-background" in curl


def test_the_python_example_is_valid_python_using_requests(client, db):
    code = snippet(docs_page(client), "python-example")
    compile(code, "quickstart.py", "exec")
    assert "import requests" in code and "requests.post(" in code and "status_url" in code


def test_the_docs_state_the_credit_policy_rate_limits_and_retries(client, db, settings):
    settings.API_RATE_LIMIT_PER_MINUTE = 321
    settings.API_MAX_RENDERS_IN_FLIGHT_PER_KEY = 7

    page = docs_page(client)

    assert "22 credits" in page and "charged only when it succeeds" in page
    assert "321 requests a minute" in page and "7 renders in flight" in page
    assert "Idempotent-Replayed: true" in page and "idempotency_key_in_use" in page


def test_the_interactive_references_are_linked_and_served_without_a_cdn(client, db):
    page = docs_page(client)
    assert 'href="/v1/docs/"' in page and 'href="/v1/redoc/"' in page

    for url in ("/v1/docs/", "/v1/redoc/"):
        reference = client.get(url).content.decode()
        assert "cdn." not in reference and "unpkg" not in reference and "jsdelivr" not in reference
        assert "/static/drf_spectacular_sidecar/" in reference


# --- no snippet sets a key it does not have ------------------------------------------


def commands(snippet_text: str) -> list[str]:
    """The lines a shell would run: everything but comments and blank lines."""
    return [line for line in snippet_text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def every_snippet(page: str) -> list[str]:
    return [html.unescape(code) for code in re.findall(r'<pre class="snippet"[^>]*><code>(.*?)</code>', page, re.S)]


@pytest.mark.parametrize("signed_in_with_a_key", [False, True])
def test_no_docs_snippet_sets_a_truncated_key_as_if_it_were_one(db, signed_in_with_a_key):
    client = Client()
    if signed_in_with_a_key:
        user = make_user("dev@example.com")
        issue_key(user, "laptop")
        client.force_login(user)

    found = every_snippet(docs_page(client))

    assert len(found) == 3  # curl with a URL, curl with an upload, Python
    for text in found:
        for line in commands(text):
            assert "…" not in line and "export " not in line, line
            assert "pxl_live_" not in line, line
    assert "#   export PIXELAPI_KEY=<your key>" in found[0]
    assert 'os.environ["PIXELAPI_KEY"]' in found[2] and "export PIXELAPI_KEY=<your key>" in found[2]


@pytest.mark.parametrize("image_url", ["", "https://example.com/p.jpg"])
def test_the_render_pages_curl_reads_the_key_from_the_variable_and_only_says_how_to_set_it(db, image_url):
    user = make_user("dev@example.com")
    key, raw = issue_key(user, "ci")
    render = Render(user=user, scene_prompt="a beach", image_url=image_url, seed=3)

    text = snippets.render_curl(render, "https://api.example.com", snippets.key_hint(user))

    assert raw not in text
    assert commands(text)[0].startswith("curl https://api.example.com/v1/image/replace-background")
    assert all("…" not in line and "export" not in line for line in commands(text))
    assert '-H "Authorization: Bearer $PIXELAPI_KEY"' in text
    assert "#   export PIXELAPI_KEY=<your key>" in text and f"starts with {key.display_prefix}" in text


def test_the_authentication_example_shows_the_key_shape_not_a_truncated_key(client, db):
    page = html.unescape(docs_page(client))
    assert "Authorization: Bearer pxl_live_<the rest of your key>" in page
    assert "Bearer pxl_live_…" not in page


# --- the interactive references, offline -----------------------------------------------


def test_redoc_links_no_web_fonts_and_keeps_images_and_fonts_on_this_site(client, db):
    page = client.get("/v1/redoc/").content.decode()

    assert "fonts.googleapis.com" not in page and "fonts.gstatic.com" not in page
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)
    assert "img-src 'self' data: blob:" in policy and "font-src 'self' data:" in policy
    # Redoc's theme uses the site's system fonts instead of Montserrat and Roboto.
    assert '"fontFamily": "system-ui' in page and "Montserrat" not in page
    assert "redoc.standalone.js" in page and "/static/drf_spectacular_sidecar/" in page


def test_swagger_ui_spaces_the_error_tables_columns_and_asks_no_validator(client, db):
    page = client.get("/v1/docs/").content.decode()

    assert ".swagger-ui .renderedMarkdown th" in page and "padding: 0.4rem 0.75rem" in page
    assert "http-equiv=\"Content-Security-Policy\"" in page
    assert '"validatorUrl": null' in page


def test_the_keys_page_says_how_to_set_the_variable_and_exports_a_new_key_in_full_once(db):
    user = make_user("dev@example.com")
    client = Client()
    client.force_login(user)

    shown = html.unescape(client.post("/dashboard/keys/", {"name": "laptop"}, follow=True).content.decode())
    raw = re.search(r'id="new-key-value"[^>]*value="([^"]+)"', shown).group(1)

    assert f"<code>export PIXELAPI_KEY='{raw}'</code>" in shown
    assert "export PIXELAPI_KEY=</code> followed by your key" in shown
    again = client.get("/dashboard/keys/").content.decode()
    assert raw not in again and "export PIXELAPI_KEY=</code> followed by your key" in again

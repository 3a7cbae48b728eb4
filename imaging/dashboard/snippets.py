"""Copy-and-paste commands: the curl equivalent of a render, and the docs' quickstart.

Keys are never shown: a snippet reads the key from ``$PIXELAPI_KEY`` and, when the
user has one, says which of their keys to use by its display prefix (e.g.
``pxl_live_3kT9``), the part the Keys page shows anyway. How to set the variable is
a comment, never a command: an ``export`` of a prefix would set a key that cannot
work, and a pasted block must not overwrite a key the reader already exported. Every
value that came from a user is shell-quoted, so a prompt with quotes or ``$(...)``
stays a string.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any

from django.db.models import F

from accounts.models import ApiKey
from imaging.models import Render

KEY_VARIABLE = "PIXELAPI_KEY"
ENDPOINT_PATH = "/v1/image/replace-background"


@dataclass(frozen=True)
class KeyHint:
    """Which key to use, by name and display prefix; never the secret."""

    name: str
    prefix: str

    @property
    def comment(self) -> str:
        return f"# Use your key “{self.name}” (it starts with {self.prefix}…)."


def key_hint(user: Any, preferred: ApiKey | None = None) -> KeyHint | None:
    """The preferred key if still active, else the user's most recently used or created active key."""
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    key = preferred if preferred is not None and preferred.is_active else None
    if key is None:
        key = (ApiKey.objects.filter(user_id=user.pk, revoked_at__isnull=True)
               .order_by(F("last_used_at").desc(nulls_last=True), "-created_at").first())
    return None if key is None else KeyHint(key.name, key.display_prefix)


SET_KEY_LINES = [
    "# Set it once in your shell, with the full key the Keys page showed you when you created it:",
    f"#   export {KEY_VARIABLE}=<your key>",
]


def export_lines(hint: KeyHint | None) -> list[str]:
    """Comment lines saying which key to use and how to put it in ``$PIXELAPI_KEY``."""
    first = hint.comment if hint is not None else "# Create an API key on the Keys page."
    return [first, *SET_KEY_LINES]


def render_curl(render: Render, base_url: str, hint: KeyHint | None) -> str:
    """The curl command that asks for the same render again (the same seed, so the same scene)."""
    url = base_url.rstrip("/") + ENDPOINT_PATH
    seed = render.seed if render.seed is not None else render.requested_seed
    lines = [*export_lines(hint), f"curl {shlex.quote(url)} \\", f'  -H "Authorization: Bearer ${KEY_VARIABLE}" \\']
    if render.image_url:
        body: dict[str, Any] = {
            "image_url": render.image_url,
            "scene_prompt": render.scene_prompt,
            "preserve_shadow": render.preserve_shadow,
            "output_format": render.output_format,
        }
        if seed is not None:
            body["seed"] = seed
        lines += ['  -H "Content-Type: application/json" \\', f"  -d {shlex.quote(json.dumps(body))}"]
    else:
        # --form-string: a prompt starting with @ or < must not be read as a file name.
        fields = [
            "-F image_file=@input.png",
            f"--form-string {shlex.quote('scene_prompt=' + render.scene_prompt)}",
            f"-F preserve_shadow={'true' if render.preserve_shadow else 'false'}",
            f"-F output_format={render.output_format}",
        ]
        if seed is not None:
            fields.append(f"-F seed={seed}")
        lines += [f"  {field} \\" for field in fields[:-1]] + [f"  {fields[-1]}"]
    return "\n".join(lines)


def quickstart_curl(base_url: str, hint: KeyHint | None) -> str:
    url = base_url.rstrip("/") + ENDPOINT_PATH
    body = json.dumps({"image_url": "https://example.com/product.jpg",
                       "scene_prompt": "on a marble kitchen counter, morning light"})
    return "\n".join([
        *export_lines(hint),
        f"curl {shlex.quote(url)} \\",
        f'  -H "Authorization: Bearer ${KEY_VARIABLE}" \\',
        '  -H "Content-Type: application/json" \\',
        '  -H "Idempotency-Key: $(uuidgen)" \\',
        f"  -d {shlex.quote(body)}",
    ])


def quickstart_upload_curl(base_url: str) -> str:
    url = base_url.rstrip("/") + ENDPOINT_PATH
    return "\n".join([
        f"curl {shlex.quote(url)} \\",
        f'  -H "Authorization: Bearer ${KEY_VARIABLE}" \\',
        "  -F image_file=@product.png \\",
        "  --form-string 'scene_prompt=on a marble kitchen counter, morning light' \\",
        "  -F preserve_shadow=true",
    ])


def quickstart_python(base_url: str, hint: KeyHint | None) -> str:
    comment = (f"# Your key “{hint.name}” starts with {hint.prefix}…; keep it out of your code:"
               if hint else "# Create a key on the Keys page; keep it out of your code:")
    comment += f"\n# export {KEY_VARIABLE}=<your key> in the shell that runs this script."
    return f'''import os
import time
import uuid

import requests

{comment}
API_KEY = os.environ["{KEY_VARIABLE}"]
BASE = "{base_url.rstrip("/")}"
HEADERS = {{"Authorization": f"Bearer {{API_KEY}}"}}

with open("product.png", "rb") as image:
    response = requests.post(
        f"{{BASE}}{ENDPOINT_PATH}",
        headers={{**HEADERS, "Idempotency-Key": str(uuid.uuid4())}},
        files={{"image_file": image}},
        data={{"scene_prompt": "on a marble kitchen counter, morning light",
              "preserve_shadow": "true"}},
        timeout=90,
    )

# 202: still rendering after the sync window; poll the status URL.
while response.status_code == 202:
    time.sleep(int(response.headers.get("Retry-After", "2")))
    response = requests.get(response.json()["status_url"], headers=HEADERS, timeout=30)
    if response.json()["status"] not in ("queued", "running"):
        break

render = response.json()
if response.ok and render.get("status") == "succeeded":
    output = requests.get(render["output_url"], timeout=60)
    with open("result.png", "wb") as out:
        out.write(output.content)
    print("charged", render["credits_charged"], "credits;", render["credits_remaining"], "left")
else:
    error = render.get("error") or {{}}
    print("failed:", error.get("code"), error.get("message"))'''

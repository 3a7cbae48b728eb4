"""The project boots, and the error registry renders one shape."""

from platform_site.api_errors import REGISTRY, error_body


def test_every_registered_code_is_snake_case_with_a_status():
    for code, entry in REGISTRY.items():
        assert code == code.lower() and " " not in code
        assert 400 <= entry.status < 600


def test_the_error_body_has_the_documented_keys():
    body = error_body("invalid_request", "bad", "req_1", param="scene_prompt")
    assert set(body["error"]) == {"type", "code", "message", "param", "request_id"}

"""The site's ASGI application with ``tests.network_guard`` installed in gunicorn's workers.

Live runs that send strangers' URLs at the API (the schemathesis fuzz) serve through
this, so an attempt to resolve or connect beyond loopback raises inside the request
and answers 500, which the fuzzer reports, instead of leaving the machine.
"""

from tests import network_guard

network_guard.install()

from platform_site.asgi import application  # noqa: E402

__all__ = ["application"]

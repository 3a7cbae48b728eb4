"""WhiteNoise for static files, runnable on the ASGI stack without a thread.

WhiteNoise 6's middleware is synchronous only, and one synchronous middleware makes
Django run everything below it (the render API's async wait included) in a thread held
for the whole request. The lookup it does per request is a dict lookup (or, with
autorefresh in development, a stat), so it runs inline on the event loop; opening a
file it serves is the only I/O, and static files are small and served by a CDN in
front of production anyway.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from whitenoise.middleware import WhiteNoiseMiddleware

from platform_site.middleware import HybridMiddleware


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any = None) -> None:
        super().__init__(get_response)
        HybridMiddleware.__init__(self, get_response)  # type: ignore[arg-type]

    def _static_response(self, request: HttpRequest) -> HttpResponse | None:
        if self.autorefresh:
            static_file = self.find_file(request.path_info)
        else:
            static_file = self.files.get(request.path_info)
        return self.serve(static_file, request) if static_file is not None else None

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        return self._static_response(request) or self.get_response(request)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        response = self._static_response(request)
        if response is not None:
            return response
        return await self.get_response(request)

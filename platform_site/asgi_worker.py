"""gunicorn's worker class for the web: uvicorn (uvloop, httptools) under gunicorn's master.

Why this pair: gunicorn keeps what the project already relies on (its master restarting
workers, the control socket, ``gunicorn.conf.py``'s bind check and the Prometheus
``child_exit`` hook, graceful reloads), and uvicorn is the event loop that lets a
request wait for its render without a thread (imaging.render_wait). Django does not
speak the ASGI lifespan protocol, so it is off rather than probed on every start.
"""

from __future__ import annotations

from uvicorn_worker import UvicornWorker


class Worker(UvicornWorker):
    CONFIG_KWARGS = {"loop": "uvloop", "http": "httptools", "lifespan": "off"}

"""gunicorn's default configuration file (it loads ./gunicorn.conf.py from where it starts).

Two hooks: at start-up the development SECRET_KEY is refused on any bind address that is
not loopback (platform_site.serving); when a worker exits, its live gauges leave the
Prometheus multiprocess files (PROMETHEUS_MULTIPROC_DIR, see platform_site.metrics).
Command-line options still choose everything else.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "platform_site.settings")


def on_starting(server):
    from platform_site.serving import gunicorn_on_starting

    gunicorn_on_starting(server)


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)

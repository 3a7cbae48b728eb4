"""gunicorn's default configuration file (it loads ./gunicorn.conf.py from where it starts).

Only a start-up hook: the development SECRET_KEY is refused on any bind address that is
not loopback (platform_site.serving). Command-line options still choose everything else.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "platform_site.settings")


def on_starting(server):
    from platform_site.serving import gunicorn_on_starting

    gunicorn_on_starting(server)

"""The developer console: overview, renders, playground, docs, and the staff usage pages;
also the site's landing page (``/``), favicon and 403/404/500 pages (``views.site``,
``views.errors``).

Server-rendered pages over the same models and code paths as the API: the playground
submits through ``imaging.renders.submit_render`` and settles through
``imaging.lifecycle``, so a render started here is charged exactly like an API call.
Mounted at the site root (``/dashboard/...``, ``/docs/``, ``/staff/...``) under the
URL namespace ``console``.
"""

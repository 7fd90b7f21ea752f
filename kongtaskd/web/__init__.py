"""The dashboard: ``kongtaskd web``, a process of its own (never the supervisor: a slow page
must never slow a claim), installed with ``pip install 'kongtaskd[web]'``.

Stack: Werkzeug (WSGI routing, requests, responses) and Jinja2 (templates, autoescaping
on), served by waitress (a pure-Python multi-threaded production WSGI server). psycopg2 is
synchronous, so a threaded WSGI server is the natural fit; each thread borrows a connection
from this process's small pool (:class:`kongtaskd.web.data.Pool`).

Modules: :mod:`~kongtaskd.web.serve` (the process: configuration checks, bind, systemd
notifications, waitress), :mod:`~kongtaskd.web.app` (routes, pages, login gate, actions),
:mod:`~kongtaskd.web.data` (every query, bounded and cached), :mod:`~kongtaskd.web.auth`,
:mod:`~kongtaskd.web.csrf`, :mod:`~kongtaskd.web.charts`; ``templates/``, ``static/``,
``sql/``. The daemon never imports any of it.
"""

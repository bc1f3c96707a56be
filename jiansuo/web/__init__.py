"""The shop site: a Django project that searches the catalogue by photo, on top of the core index.

Run it with ``python -m jiansuo.web <manage.py command>`` (e.g. ``migrate``, ``runserver``,
``import_catalog``); settings come from environment variables (see :mod:`jiansuo.web.settings`).
The core (everything outside this package) never imports Django.
"""

"""``python -m jiansuo.web serve``: run the site on gunicorn, the production WSGI server.

``runserver`` is Django's development server: one process, a short listen queue, no access log.
``serve`` starts gunicorn with a process per core (each loads the model once, before its first
request), a few threads per process (their query photos share network calls, see
``JIANSUO_EMBED_BATCH``), static files served by WhiteNoise and an access log on stdout.
"""

from __future__ import annotations

import os

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

#: Pending connections the kernel queues for the server while every thread is busy (gunicorn's default).
BACKLOG = 2048


class Command(BaseCommand):
    help = ("Serve the site with gunicorn (a worker process per core, the model loaded once per worker, "
            "static files by WhiteNoise, access log on stdout). For development, runserver still works.")

    def add_arguments(self, parser):
        parser.add_argument("--bind", default="127.0.0.1:8000", help="address:port to listen on (127.0.0.1:8000)")
        parser.add_argument("--workers", type=int, default=0,
                            help="worker processes (default: one per core)")
        parser.add_argument("--threads", type=int, default=8, help="request threads per worker (default 8)")
        parser.add_argument("--timeout", type=int, default=60,
                            help="seconds a request may take before its worker is restarted (default 60)")
        parser.add_argument("--no-collectstatic", action="store_true",
                            help="do not collect static files into STATIC_ROOT first")
        parser.add_argument("--no-access-log", action="store_true", help="no access log")

    def handle(self, *args, **opts):
        try:
            from gunicorn.app.base import BaseApplication
        except ImportError:  # pragma: no cover - gunicorn is a dependency of the web extra
            raise CommandError("gunicorn is not installed: pip install 'jiansuo[web]'") from None
        workers = opts["workers"] or os.cpu_count() or 1
        if workers < 1 or opts["threads"] < 1:
            raise CommandError("--workers and --threads must be at least 1")
        if not opts["no_collectstatic"]:
            call_command("collectstatic", interactive=False, verbosity=0)
        # Each worker's network gets its share of the cores, so workers do not fight over them.
        os.environ.setdefault("JIANSUO_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
        connections.close_all()  # nothing open may be shared by the forked workers
        options = {
            "bind": opts["bind"], "workers": workers, "threads": opts["threads"], "worker_class": "gthread",
            "timeout": opts["timeout"], "graceful_timeout": 30, "keepalive": 5, "backlog": BACKLOG,
            "accesslog": None if opts["no_access_log"] else "-", "errorlog": "-",
            "post_worker_init": _warm_up, "proc_name": "jiansuo",
        }
        self.stdout.write(f"serving on http://{opts['bind']}/ with {workers} worker(s) x {opts['threads']} threads",
                          ending="\n")
        self.stdout.flush()

        class Server(BaseApplication):
            def load_config(self):
                for key, value in options.items():
                    self.cfg.set(key, value)
                if "control_socket_disable" in self.cfg.settings:  # gunicorn 24+: no socket in $HOME
                    self.cfg.set("control_socket_disable", True)

            def load(self):
                from jiansuo.web.wsgi import application

                return application

        Server().run()


def _warm_up(worker) -> None:
    """gunicorn hook, in each worker before it accepts requests: the model and the index in memory."""
    from threadpoolctl import threadpool_limits

    from jiansuo.web.catalog.search import warm_up

    # A request's products of vectors are small (one query): BLAS threads waking on cores that the
    # other workers and requests keep busy cost more than they save.
    threadpool_limits(1, user_api="blas")

    try:
        warm_up()
    except Exception as exc:  # noqa: BLE001 - a store to rebuild must not stop the site from answering
        worker.log.warning("warm-up failed (the first search will say why): %s", exc)

"""Scratch sites for the benchmarks that run the real site (bench/workers.py, bench/site_load.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def scratch_database(server_url: str, name: str) -> str:
    """A fresh, empty database called ``name`` on the PostgreSQL server of ``server_url``; returns its URL."""
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    return server_url.rsplit("/", 1)[0] + "/" + name


def site_env(data_dir: Path, db_url: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a site process: this one's, minus any JIANSUO_/DJANGO_/CELERY_ setting, plus
    a production configuration on 127.0.0.1 keeping everything under ``data_dir``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JIANSUO_", "DJANGO_", "CELERY_", "DATABASE_URL")) or k == "JIANSUO_CACHE"}
    env.update({"DJANGO_SETTINGS_MODULE": "jiansuo.web.settings", "JIANSUO_SECRET_KEY": "bench-" + "x" * 50,
                "JIANSUO_DATA_DIR": str(data_dir), "JIANSUO_DEBUG": "0", "JIANSUO_HTTPS": "0",
                "JIANSUO_ALLOWED_HOSTS": "127.0.0.1,localhost", "PYTHONUNBUFFERED": "1"})
    if db_url:
        env["DATABASE_URL"] = db_url
    env.update(extra)
    return env


def manage(env: dict[str, str], *args: str) -> str:
    """Run ``python -m jiansuo.web ARGS`` in that environment; returns its output (raises on failure)."""
    done = subprocess.run([sys.executable, "-m", "jiansuo.web", *args], env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"jiansuo.web {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(env: dict[str, str], args: list[str], log: Path, port: int, timeout: float = 180) -> subprocess.Popen:
    """Start ``python -m jiansuo.web ARGS`` (serve or runserver) and wait until ``port`` accepts connections."""
    out = open(log, "w")
    proc = subprocess.Popen([sys.executable, "-m", "jiansuo.web", *args], env=env, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop(proc)
                raise RuntimeError(f"the server did not start:\n{log.read_text()[-3000:]}") from None
            time.sleep(0.2)


def stop(proc: subprocess.Popen) -> None:
    """Stop a process started with its own session, and everything it started."""
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)

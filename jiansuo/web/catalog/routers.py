"""Which tables a database gets: the historical pgvector models (migration 0002) exist on PostgreSQL only.

Migration 0002 created PhotoFeature and CodeLayer (pgvector column types) on PostgreSQL only, and
0003 drops them again, there only; the vectors now live in the core's store. Everything else is the
same on every database.
"""

from __future__ import annotations

from django.db import connections

POSTGRESQL_ONLY = {"photofeature", "codelayer"}


class PgVectorTablesRouter:
    """Database router: migrate :data:`POSTGRESQL_ONLY` models only on PostgreSQL."""

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints) -> bool | None:
        if app_label == "catalog" and model_name in POSTGRESQL_ONLY:
            return connections[db].vendor == "postgresql"
        return None

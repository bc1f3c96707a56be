"""Which tables a database gets: the pgvector tables exist on PostgreSQL only.

With SQLite the search index is the core's index folder, so migrations skip the models whose
columns are pgvector types (they could not be created there). Everything else is the same on
every database.
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

"""``python -m jiansuo.web train_hash``: train the hash layer of the PostgreSQL search (coarse to fine)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from jiansuo.web.catalog.models import CODE_BITS, PhotoFeature


class Command(BaseCommand):
    help = (f"PostgreSQL only. Train an unsupervised {CODE_BITS}-bit ITQ hash layer on the stored photo "
            "features, then recompute every photo's code with it. JIANSUO_PG_SEARCH=hash then searches "
            "coarse to fine (Hamming distance on the codes, re-ranked by the features). Rerun after the "
            "catalogue has grown or changed a lot.")

    def add_arguments(self, parser):
        parser.add_argument("--sample", type=int, default=20_000, help="features to train on (default 20000)")
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args, **opts):
        if connection.vendor != "postgresql":
            raise CommandError("hash codes are kept in PostgreSQL only; with SQLite use the CLI's "
                               "`jiansuo train-hash` on an index folder")
        from jiansuo.web.catalog.pgsearch import recode, train_code_layer

        try:
            row = train_code_layer(sample=opts["sample"], seed=opts["seed"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"trained {row} on {row.trained_on} features")
        total = PhotoFeature.objects.count()
        done = recode(progress=lambda n: self.stdout.write(f"  coded {n} / {total}"))
        self.stdout.write(self.style.SUCCESS(f"layer {row.pk} is current; recomputed {done} codes"))

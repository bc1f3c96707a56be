"""``python -m jiansuo.web train_hash``: train the hash layer searches with ``JIANSUO_SEARCH_MODE=hash`` (or ``pca``)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from jiansuo.hashing.itq import ITQ_SAMPLE, train_itq
from jiansuo.web.catalog.search import get_store

BITS = 128


class Command(BaseCommand):
    help = (f"Train an unsupervised {BITS}-bit ITQ hash layer on (a sample of) the stored photo features, "
            "then compute every photo's code with it; photos added later are coded as they are stored. "
            "JIANSUO_SEARCH_MODE=hash then searches coarse to fine (Hamming distance on the codes, re-ranked "
            "by the features); on PostgreSQL also pca (the layer's 128-d projection). Rerun after the "
            "catalogue has grown or changed a lot.")

    def add_arguments(self, parser):
        parser.add_argument("--sample", type=int, default=ITQ_SAMPLE,
                            help=f"features to train on (default {ITQ_SAMPLE})")
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args, **opts):
        store = get_store()
        if len(store) <= BITS:
            raise CommandError(f"training a {BITS}-bit layer needs more than {BITS} indexed photos; "
                               f"there are {len(store)}")
        try:
            layer = train_itq(store.sample(opts["sample"], seed=opts["seed"]), BITS, seed=opts["seed"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"trained an {layer.kind} {layer.bits}-bit layer on {layer.info['trained_on']} features")
        coded = store.set_hash_layer(layer, progress=opts["verbosity"] > 1)
        self.stdout.write(self.style.SUCCESS(f"the layer is current; computed {coded} codes"))

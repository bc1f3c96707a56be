"""``python -m jiansuo.web train_hash``: train the hash layer of the site's vector store.

Without labels (the default) an ITQ layer: its codes make ``JIANSUO_SEARCH_MODE=hash`` (and, on
PostgreSQL, ``pca``) searches coarse to fine. With ``--categories``, a supervised layer trained on the
products' categories (Lin et al. 2015, the original design's latent layer): its learnt feature then
ranks "products like it" too, if it measurably did better on held-out photos
(:func:`jiansuo.hashing.train.train_judged`).
"""

from __future__ import annotations

from collections import Counter

from django.core.management.base import BaseCommand, CommandError

from jiansuo.hashing.itq import ITQ_SAMPLE, train_itq
from jiansuo.hashing.train import train_judged
from jiansuo.web.catalog.models import ProductImage
from jiansuo.web.catalog.search import get_store

BITS = 128


class Command(BaseCommand):
    help = (f"Train a {BITS}-bit hash layer on the stored photo features and compute every photo's code with it "
            "(photos added later are coded as they are stored). Without labels: ITQ, for "
            "JIANSUO_SEARCH_MODE=hash (or pca on PostgreSQL). With --categories: supervised on the products' "
            "categories; the search ranking then uses its learnt feature where that measurably helped on "
            "held-out photos. Rerun after the catalogue has grown or changed a lot.")

    def add_arguments(self, parser):
        parser.add_argument("--categories", action="store_true",
                            help="train on the products' categories (photos of uncategorised products are left out)")
        parser.add_argument("--sample", type=int, default=ITQ_SAMPLE,
                            help=f"ITQ: features to train on (default {ITQ_SAMPLE})")
        parser.add_argument("--epochs", type=int, default=20, help="--categories: training epochs (default 20)")
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args, **opts):
        store = get_store()
        if len(store) <= BITS:
            raise CommandError(f"training a {BITS}-bit layer needs more than {BITS} indexed photos; "
                               f"there are {len(store)}")
        try:
            if opts["categories"]:
                layer = self._supervised(store, opts)
            else:
                layer = train_itq(store.sample(opts["sample"], seed=opts["seed"]), BITS, seed=opts["seed"])
                self.stdout.write(f"trained an {layer.kind} {layer.bits}-bit layer on "
                                  f"{layer.info['trained_on']} features")
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        coded = store.set_hash_layer(layer, progress=opts["verbosity"] > 1)
        self.stdout.write(self.style.SUCCESS(f"the layer is current; computed {coded} codes"))

    def _supervised(self, store, opts):
        files = store.contains(ProductImage.objects.values_list("file", flat=True))
        by_photo: dict[str, Counter] = {}
        for file, category in ProductImage.objects.exclude(product__category="").values_list(
                "file", "product__category"):
            if file in files:
                by_photo.setdefault(file, Counter())[category] += 1
        # A photo shared by products of several categories is labelled with its most common one.
        photos = sorted(by_photo)
        labels = [by_photo[f].most_common(1)[0][0] for f in photos]
        if len(set(labels)) < 2:
            raise ValueError("training on categories needs indexed photos of at least two categories")
        layer = train_judged(store.get(photos), labels, BITS, epochs=opts["epochs"], seed=opts["seed"],
                             progress=opts["verbosity"] > 1)
        judged = layer.info.get("judgement")
        self.stdout.write(f"trained a supervised {layer.bits}-bit layer on {layer.info['trained_on']} photos of "
                          f"{len(set(labels))} categories")
        if judged:
            self.stdout.write(f"held-out photos ({layer.info['judged_on']}): mAP@100 "
                              f"{judged['plain']['map100']:.3f} plain, {judged['expanded']['map100']:.3f} with "
                              f"query expansion, {judged['learned']['map100']:.3f} with the learnt feature; "
                              f"the search ranking uses the {layer.info['similar_ranking']} one")
        return layer

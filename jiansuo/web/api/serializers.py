"""Request and response shapes of the API (also what the OpenAPI description is generated from)."""

from __future__ import annotations

from django.conf import settings
from django.core.files.storage import default_storage
from django.utils.functional import lazy
from django.utils.text import format_lazy
from rest_framework import serializers

from jiansuo.autobox import AUTO as AUTO_BOX
from jiansuo.images import Box
from jiansuo.search.ranking import INTENTS
from jiansuo.web.catalog.models import Product
from jiansuo.web.catalog.search import Filters, ProductHit, match_level


# A setting's value in help texts, read when the schema is generated (not when this module is imported).
_setting = lazy(lambda name: f"{getattr(settings, name):g}", str)


class FilterSerializer(serializers.Serializer):
    k = serializers.IntegerField(required=False, default=10, min_value=1, max_value=settings.JIANSUO_MAX_K,
                                 help_text="number of products to return")
    category = serializers.CharField(required=False, allow_blank=True, max_length=100)
    min_price = serializers.DecimalField(required=False, allow_null=True, max_digits=12, decimal_places=2,
                                         min_value=0)
    max_price = serializers.DecimalField(required=False, allow_null=True, max_digits=12, decimal_places=2,
                                         min_value=0)
    min_score = serializers.FloatField(
        required=False, min_value=-1, max_value=1,
        help_text=format_lazy("only products at least this similar (cosine similarity, -1 to 1); defaults to "
                              "the threshold of this server's pages, JIANSUO_MIN_SIMILARITY ({}); -1 returns the "
                              "k best whatever their score", _setting("JIANSUO_MIN_SIMILARITY")))

    def validate(self, data):
        lo, hi = data.get("min_price"), data.get("max_price")
        if lo is not None and hi is not None and lo > hi:
            raise serializers.ValidationError("min_price is above max_price")
        return data

    def filters(self) -> Filters:
        d = self.validated_data
        return Filters(d.get("category") or None, d.get("min_price"), d.get("max_price"))

    def threshold(self) -> float:
        """The request's ``min_score``, or the site's threshold (read per request, not at import)."""
        value = self.validated_data.get("min_score")
        return settings.JIANSUO_MIN_SIMILARITY if value is None else value


class SearchRequestSerializer(FilterSerializer):
    image = serializers.FileField(help_text="the query photo (JPEG, PNG, WebP, GIF, BMP or TIFF)")
    intent = serializers.ChoiceField(
        choices=INTENTS, required=False, default="both",
        help_text="both (default): the photographed product itself first when the catalogue has it (and "
                  "near-copies of it), then products like it; same: plain nearest photos (e.g. to find "
                  "duplicate listings); similar: products like it, ranked by the expanded query")
    box = serializers.CharField(required=False, allow_blank=True, max_length=100,
                                help_text="search with this part of the photo only: x0,y0,x1,y1 as fractions of "
                                          "its width and height (0-1), e.g. 0.5,0,1,1 for the right half; "
                                          "auto: the part that matches the catalogue best (the product in a "
                                          "photo of a room or an outfit), or the whole photo when it is the product")

    verify = serializers.BooleanField(
        required=False, default=False,
        help_text="check the first 16 results against the photo's pixels and put the one it is a copy of first "
                  "(a small, turned or cropped copy of a listing photo); slower, and only for the whole photo")

    def validate(self, data):
        data = super().validate(data)
        if data.get("verify") and data.get("box"):
            raise serializers.ValidationError({"verify": "verify compares whole photos: not with a box"})
        return data

    def validate_box(self, value: str) -> Box | str | None:
        if not value:
            return None
        if value.strip().lower() == AUTO_BOX:
            return AUTO_BOX
        try:
            return Box.parse(value)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None


class ResultSerializer(serializers.Serializer):
    item_id = serializers.CharField()
    title = serializers.CharField()
    category = serializers.CharField()
    price = serializers.DecimalField(max_digits=12, decimal_places=2, coerce_to_string=False)
    currency = serializers.CharField()
    shop = serializers.CharField()
    url = serializers.CharField(help_text="the product's listing")
    image_url = serializers.CharField(help_text="the best-matching photo of the product")
    product_url = serializers.CharField(help_text="the product's page on this site")
    score = serializers.FloatField(help_text="cosine similarity, higher is more similar (1 = identical)")
    match = serializers.ChoiceField(
        choices=["very_similar", "similar", "weak"],
        help_text=format_lazy("the score in words, as the site's pages label it: very_similar from "
                              "JIANSUO_VERY_SIMILAR ({}), similar from JIANSUO_MIN_SIMILARITY ({}), weak below "
                              "(returned only when min_score is lower; the pages hide such products)",
                              _setting("JIANSUO_VERY_SIMILAR"), _setting("JIANSUO_MIN_SIMILARITY")))


class SearchResponseSerializer(serializers.Serializer):
    box = serializers.CharField(allow_null=True, help_text="the part of the photo searched, x0,y0,x1,y1; null: "
                                                           "the whole photo")
    min_score = serializers.FloatField(help_text="the similarity threshold applied (the request's min_score or "
                                                 "the server's default)")
    results = ResultSerializer(many=True, help_text="at most k products scoring min_score or more, best first; "
                                                    "empty when nothing in the catalogue is that similar")


class SimilarResponseSerializer(SearchResponseSerializer):
    item_id = serializers.CharField()
    indexed = serializers.BooleanField(help_text="false while the product's photos are not indexed yet")


class ProductSerializer(serializers.ModelSerializer):
    image_urls = serializers.SerializerMethodField()
    price = serializers.DecimalField(max_digits=12, decimal_places=2, coerce_to_string=False)

    class Meta:
        model = Product
        fields = ("item_id", "title", "category", "price", "currency", "shop", "url", "image_urls",
                  "created", "updated")

    def get_image_urls(self, obj: Product) -> list[str]:
        request = self.context["request"]
        return [request.build_absolute_uri(img.url) for img in obj.images.all()]


class ErrorSerializer(serializers.Serializer):
    error = serializers.CharField(help_text="what went wrong, in plain words")
    status = serializers.IntegerField()
    fields = serializers.DictField(required=False, help_text="per-field messages of a rejected request")


def hit_data(hit: ProductHit, request) -> dict:
    """One search result as the API returns it."""
    p = hit.product
    return {
        "item_id": p.item_id, "title": p.title, "category": p.category, "price": p.price,
        "currency": p.currency, "shop": p.shop, "url": p.url,
        "image_url": request.build_absolute_uri(default_storage.url(hit.image)),
        "product_url": request.build_absolute_uri(p.get_absolute_url()),
        "score": round(float(hit.score), 4),
        "match": match_level(hit.score),
    }

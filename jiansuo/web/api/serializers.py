"""Request and response shapes of the API (also what the OpenAPI description is generated from)."""

from __future__ import annotations

from django.conf import settings
from django.core.files.storage import default_storage
from rest_framework import serializers

from jiansuo.images import Box
from jiansuo.web.catalog.models import Product
from jiansuo.web.catalog.search import Filters, ProductHit


class FilterSerializer(serializers.Serializer):
    k = serializers.IntegerField(required=False, default=10, min_value=1, max_value=settings.JIANSUO_MAX_K,
                                 help_text="number of products to return")
    category = serializers.CharField(required=False, allow_blank=True, max_length=100)
    min_price = serializers.DecimalField(required=False, allow_null=True, max_digits=12, decimal_places=2,
                                         min_value=0)
    max_price = serializers.DecimalField(required=False, allow_null=True, max_digits=12, decimal_places=2,
                                         min_value=0)

    def validate(self, data):
        lo, hi = data.get("min_price"), data.get("max_price")
        if lo is not None and hi is not None and lo > hi:
            raise serializers.ValidationError("min_price is above max_price")
        return data

    def filters(self) -> Filters:
        d = self.validated_data
        return Filters(d.get("category") or None, d.get("min_price"), d.get("max_price"))


class SearchRequestSerializer(FilterSerializer):
    image = serializers.FileField(help_text="the query photo (JPEG, PNG, WebP, GIF, BMP or TIFF)")
    box = serializers.CharField(required=False, allow_blank=True, max_length=100,
                                help_text="search with this part of the photo only: x0,y0,x1,y1 as fractions of "
                                          "its width and height (0-1), e.g. 0.5,0,1,1 for the right half")

    def validate_box(self, value: str) -> Box | None:
        if not value:
            return None
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
    score = serializers.FloatField(help_text="cosine similarity, higher is more similar")


class SearchResponseSerializer(serializers.Serializer):
    results = ResultSerializer(many=True)


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
    }

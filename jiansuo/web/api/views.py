"""API endpoints. They share the pages' backend (:mod:`jiansuo.web.catalog.search`) and checks."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils.translation import gettext as _
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.decorators import api_view, parser_classes
from rest_framework.exceptions import NotFound
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from jiansuo.autobox import AUTO as AUTO_BOX
from jiansuo.web.catalog.forms import photo_box, photo_vector, upload_bytes
from jiansuo.web.catalog.models import Product
from jiansuo.web.catalog.search import search_products, similar_products

from .errors import NotAnImage, PayloadTooLarge
from .serializers import (
    ErrorSerializer,
    FilterSerializer,
    ProductSerializer,
    SearchRequestSerializer,
    SearchResponseSerializer,
    SimilarResponseSerializer,
    hit_data,
)

_ERRORS = {
    401: OpenApiResponse(ErrorSerializer, description="no or invalid credentials"),
    403: OpenApiResponse(ErrorSerializer, description="not allowed (e.g. session without CSRF token)"),
}


@extend_schema(
    summary="Search the catalogue by photo",
    request={"multipart/form-data": SearchRequestSerializer},
    responses={200: SearchResponseSerializer,
               400: OpenApiResponse(ErrorSerializer, description="missing field, bad filter or not an image"),
               413: OpenApiResponse(ErrorSerializer, description="the photo exceeds the upload limit"),
               **_ERRORS},
)
@api_view(["POST"])
@parser_classes([MultiPartParser, FormParser])
def search(request: Request) -> Response:
    """The ``k`` products most similar to the uploaded ``image``, best first, among those scoring at least
    ``min_score`` (by default the server's threshold, so a photo unlike anything in the catalogue gets
    no results)."""
    params = SearchRequestSerializer(data=request.data)
    params.is_valid(raise_exception=True)
    box = params.validated_data.get("box")
    try:
        data = upload_bytes(params.validated_data["image"])
        if box == AUTO_BOX:
            # The whole photo's vector is what auto-box compares its windows with, and the answer when
            # no window does better: computed once for both.
            vector = photo_vector(data)
            box = photo_box(data, whole=vector)
            if box is not None:
                vector = photo_vector(data, box=box)
        else:
            vector = photo_vector(data, box=box)
    except DjangoValidationError as exc:
        error = PayloadTooLarge if exc.code == "too_large" else NotAnImage
        raise error(exc.messages[0]) from None
    min_score = params.threshold()
    hits = search_products(vector, params.validated_data["k"], params.filters(), min_score=min_score,
                           intent=params.validated_data["intent"],
                           verify_photo=data if params.validated_data["verify"] else None)
    return Response({"box": str(box) if box else None, "min_score": min_score,
                     "results": [hit_data(h, request) for h in hits]})


@extend_schema(
    summary="Products similar to a catalogue product",
    parameters=[FilterSerializer],
    responses={200: SimilarResponseSerializer, 404: OpenApiResponse(ErrorSerializer), **_ERRORS},
)
@api_view(["GET"])
def similar(request: Request, item_id: str) -> Response:
    """Products that look like ``item_id`` (the product itself excluded), best first, among those scoring
    at least ``min_score`` (by default the server's threshold)."""
    item = _product(item_id)
    params = FilterSerializer(data=request.query_params)
    params.is_valid(raise_exception=True)
    min_score = params.threshold()
    hits, indexed = similar_products(item, params.validated_data["k"], params.filters(), min_score=min_score)
    return Response({"item_id": item.item_id, "indexed": indexed, "min_score": min_score,
                     "results": [hit_data(h, request) for h in hits]})


@extend_schema(summary="One product", responses={200: ProductSerializer, 404: OpenApiResponse(ErrorSerializer),
                                                 **_ERRORS})
@api_view(["GET"])
def product(request: Request, item_id: str) -> Response:
    """A catalogue product with the URLs of its photos."""
    item = _product(item_id)
    return Response(ProductSerializer(item, context={"request": request}).data)



def _product(item_id: str) -> Product:
    try:
        return Product.objects.prefetch_related("images").get(item_id=item_id, hidden=False)
    except Product.DoesNotExist:
        raise NotFound(_("No product has the item id %(item_id)s.") % {"item_id": item_id}) from None

"""Products and their photos.

A photo file is stored once per distinct content (its name is the hash of the bytes it came
from), so several products may point at the same file. The file's path relative to MEDIA_ROOT
is its id in the search index: stable, unique, and the same in the database and the index.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils.translation import gettext_lazy as _


def _default_currency() -> str:
    return settings.JIANSUO_DEFAULT_CURRENCY


class Product(models.Model):
    item_id = models.CharField(_("item id"), max_length=100, unique=True)
    title = models.CharField(_("title"), max_length=300)
    category = models.CharField(_("category"), max_length=100, blank=True, db_index=True)
    price = models.DecimalField(_("price"), max_digits=12, decimal_places=2, db_index=True)
    currency = models.CharField(_("currency"), max_length=3, default=_default_currency,
                                help_text=_("ISO 4217 code, e.g. CNY"))
    shop = models.CharField(_("shop"), max_length=200, blank=True)
    url = models.URLField(_("listing URL"), max_length=1000, blank=True)
    created = models.DateTimeField(_("created"), auto_now_add=True)
    updated = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        ordering = ["item_id"]
        verbose_name = _("product")
        verbose_name_plural = _("products")

    def __str__(self) -> str:
        return f"{self.item_id}: {self.title}"

    def get_absolute_url(self) -> str:
        return reverse("catalog:product", args=[self.item_id])

    @property
    def main_image(self) -> "ProductImage | None":
        """The first photo (uses prefetched images when the caller prefetched them)."""
        images = list(self.images.all())
        return images[0] if images else None


class ProductImage(models.Model):
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="images",
                                verbose_name=_("product"))
    #: Path relative to MEDIA_ROOT, e.g. ``products/ab/cd/abcd....jpg``; also the index id.
    file = models.CharField(_("file"), max_length=255, db_index=True)
    sha256 = models.CharField(_("content hash"), max_length=64)
    width = models.PositiveIntegerField(_("width"), default=0)
    height = models.PositiveIntegerField(_("height"), default=0)
    position = models.PositiveSmallIntegerField(_("position"), default=0)
    #: Where an imported photo came from (URL or path), so a rerun need not fetch it again.
    source = models.CharField(_("source"), max_length=1000, blank=True)

    class Meta:
        ordering = ["position", "id"]
        verbose_name = _("product photo")
        verbose_name_plural = _("product photos")
        constraints = [
            models.UniqueConstraint(fields=["product", "file"], name="one_copy_of_a_photo_per_product"),
        ]

    def __str__(self) -> str:
        return self.file

    @property
    def url(self) -> str:
        """The photo's URL under MEDIA_URL."""
        from django.core.files.storage import default_storage

        return default_storage.url(self.file)

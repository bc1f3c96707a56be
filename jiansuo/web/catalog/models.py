"""Products and their photos, the catalogue's change counter, and queued indexing work.

A photo file is stored once per distinct content (its name is the hash of the bytes it came
from), so several products may point at the same file. The file's path relative to MEDIA_ROOT
is its id in the vector store (:mod:`.search`): stable, unique, and the same in the database and
the store. The vectors themselves are the core's (a pgvector table beside these on PostgreSQL, an
index folder otherwise), not Django models.
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
    #: Hidden by staff (e.g. a duplicate listing): never in search results, similar products, pages or the API.
    hidden = models.BooleanField(_("hidden"), default=False, db_index=True)
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


# ------------------------------------------------------------------ change detection


class CatalogVersion(models.Model):
    """One row whose ``version`` database triggers bump on every change to products or their photos
    (saves, bulk writes and raw SQL alike), so every process can tell cheaply whether what it keeps
    in memory about the catalogue (the search filters' table) is still current."""

    version = models.BigIntegerField(default=0)

    @classmethod
    def current(cls) -> int:
        """The catalogue's version now (one indexed read)."""
        version = cls.objects.filter(pk=1).values_list("version", flat=True).first()
        if version is None:  # the row was flushed (a test database reset): start counting again
            cls.objects.get_or_create(pk=1)
            return 0
        return version


# ------------------------------------------------------------------ queued indexing work


class IndexJob(models.Model):
    """Photos queued for embedding together (an import, an admin change, a repair), in tasks."""

    label = models.CharField(_("what"), max_length=300)
    created = models.DateTimeField(_("created"), auto_now_add=True)
    photos = models.PositiveIntegerField(_("photos"), default=0)

    class Meta:
        ordering = ["-created", "-id"]
        verbose_name = _("indexing job")
        verbose_name_plural = _("indexing jobs")

    def __str__(self) -> str:
        return self.label


class IndexTask(models.Model):
    """One unit of embedding work (a few dozen photos); a worker runs it as a Celery task."""

    class State(models.TextChoices):
        QUEUED = "queued", _("queued")
        RUNNING = "running", _("running")
        DONE = "done", _("done")
        FAILED = "failed", _("failed")

    job = models.ForeignKey(IndexJob, on_delete=models.CASCADE, related_name="tasks")
    photo_ids = models.JSONField()
    size = models.PositiveIntegerField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED, db_index=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    indexed = models.PositiveIntegerField(default=0)
    #: Photos that could not be embedded (unreadable files) as [photo id, reason] pairs.
    failed = models.JSONField(default=list)
    error = models.TextField(blank=True)
    worker = models.CharField(max_length=200, blank=True)
    started = models.DateTimeField(null=True)
    finished = models.DateTimeField(null=True)

    class Meta:
        ordering = ["id"]


def files_among(queryset, keys: list[str], chunk: int = 1000) -> set[str]:
    """Those of ``keys`` that appear in the ``file`` column of ``queryset`` (chunked: SQLite limits IN lists)."""
    found: set[str] = set()
    for start in range(0, len(keys), chunk):
        found.update(queryset.filter(file__in=keys[start:start + chunk]).values_list("file", flat=True))
    return found

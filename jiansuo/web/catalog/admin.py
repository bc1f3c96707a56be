"""The catalogue in Django's admin: staff add, change and delete products and their photos.

Every change goes through :mod:`.services`, so the search index is updated incrementally (only the
photos that were added or dropped) right after the database.
"""

from __future__ import annotations

import hashlib
import logging

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models, transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from . import duplicates, jobs, services
from .forms import decode_photo, upload_bytes
from .models import IndexJob, IndexTask, Product, ProductImage
from .photos import store_product_photo

log = logging.getLogger(__name__)

admin.site.site_header = _("Jiansuo catalogue")
admin.site.site_title = _("Jiansuo")


class ProductImageForm(forms.ModelForm):
    """A product photo row: a new photo is uploaded, checked, re-encoded and stored by content."""

    upload = forms.FileField(label=_("photo file"), required=False)

    class Meta:
        model = ProductImage
        fields = ("position",)

    def clean_upload(self):
        upload = self.cleaned_data.get("upload")
        if upload is None:
            if not self.instance.pk:
                raise ValidationError(_("Choose a photo file."))
            return None
        data = upload_bytes(upload)
        decode_photo(data)
        self.photo_bytes = data
        self.photo_digest = hashlib.sha256(data).hexdigest()
        return upload

    def save(self, commit: bool = True):
        data = getattr(self, "photo_bytes", None)
        if data is not None:
            stored = store_product_photo(data)
            self.instance.file, self.instance.sha256 = stored.file, stored.sha256
            self.instance.width, self.instance.height = stored.width, stored.height
            self.instance.source = ""
        return super().save(commit)


class ProductImageFormSet(forms.BaseInlineFormSet):
    def clean(self):
        super().clean()
        seen: set[str] = set()
        for form in self.forms:
            if not hasattr(form, "cleaned_data") or form.cleaned_data.get("DELETE"):
                continue
            digest = getattr(form, "photo_digest", None) or (form.instance.sha256 if form.instance.pk else None)
            if digest and digest in seen:
                raise ValidationError(_("The same photo was given twice."))
            if digest:
                seen.add(digest)


class ProductImageInline(admin.TabularInline):
    model = ProductImage
    form = ProductImageForm
    formset = ProductImageFormSet
    # A product is found by its photos: the first row is required.
    min_num = 1
    extra = 0
    fields = ("preview", "upload", "position", "width", "height", "source")
    readonly_fields = ("preview", "width", "height", "source")

    @admin.display(description=_("preview"))
    def preview(self, obj: ProductImage):
        if not obj.pk:
            return "—"
        return format_html('<img src="{}" alt="" style="max-height:80px;max-width:80px">', obj.url)


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ("item_id", "title", "category", "price", "currency", "shop", "photo_count", "hidden", "updated")
    list_filter = ("hidden", "category", "currency")
    actions = ["hide_products", "show_products"]
    search_fields = ("item_id", "title", "shop")
    readonly_fields = ("created", "updated")
    inlines = [ProductImageInline]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    @admin.display(description=_("photos"))
    def photo_count(self, obj: Product) -> int:
        return obj.images.count()

    @admin.action(description=_("Hide the selected products (duplicates)"), permissions=["change"])
    def hide_products(self, request, queryset):
        n = queryset.update(hidden=True)
        self.message_user(request, _("%(count)d product(s) hidden.") % {"count": n}, messages.SUCCESS)

    @admin.action(description=_("Show the selected products again"), permissions=["change"])
    def show_products(self, request, queryset):
        n = queryset.update(hidden=False)
        self.message_user(request, _("%(count)d product(s) shown again.") % {"count": n}, messages.SUCCESS)

    def get_urls(self):
        own = [path("duplicates/", self.admin_site.admin_view(self.duplicates_view), name="catalog_product_duplicates")]
        return own + super().get_urls()

    def duplicates_view(self, request: HttpRequest) -> HttpResponse:
        """Possible duplicate products (near-identical photos), each with a button hiding one of them."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        can_hide = self.has_change_permission(request)
        if request.method == "POST":
            if not can_hide:
                raise PermissionDenied
            product = get_object_or_404(Product, pk=request.POST.get("hide"))
            Product.objects.filter(pk=product.pk).update(hidden=True)
            self.message_user(request, _("%(product)s is hidden.") % {"product": product}, messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:catalog_product_duplicates"))
        context = {**self.admin_site.each_context(request), "opts": self.model._meta,
                   "title": _("Possible duplicates"), "groups": duplicates.duplicate_products(), "can_hide": can_hide}
        return TemplateResponse(request, "admin/catalog/product/duplicates.html", context)

    def save_related(self, request, form, formsets, change):
        before = services.photo_ids_of(form.instance)
        super().save_related(request, form, formsets, change)
        self._sync(request, before | services.photo_ids_of(form.instance))

    def delete_model(self, request, obj):
        services.delete_products(Product.objects.filter(pk=obj.pk))

    def delete_queryset(self, request, queryset):
        services.delete_products(queryset)

    def _sync(self, request, photo_ids: set[str]) -> None:
        # After the admin's transaction commits: a rolled-back change must not touch the index.
        transaction.on_commit(lambda: self._sync_now(request, photo_ids))

    def _sync_now(self, request, photo_ids: set[str]) -> None:
        # The database change is committed; a failing index update must not hide that.
        try:
            report = services.sync_index(photo_ids, label=f"admin: {request.user} changed products")
        except Exception as exc:  # noqa: BLE001 (any failure: tell the operator how to repair)
            log.exception("search index update failed")
            self.message_user(request, _("Saved, but the search index could not be updated (%(error)s). "
                                         "Run `python -m jiansuo.web sync_index` to repair it.")
                              % {"error": exc}, messages.WARNING)
            return
        for pid, reason in report.failed:
            self.message_user(request, _("Photo %(photo)s could not be indexed: %(reason)s")
                              % {"photo": pid, "reason": reason}, messages.WARNING)
        if report.job is not None:
            self.message_user(request, _("%(count)d photo(s) queued for the indexing workers; they are "
                                         "searchable once indexing job %(job)s is done.")
                              % {"count": report.queued, "job": report.job.pk}, messages.INFO)


class IndexTaskInline(admin.TabularInline):
    model = IndexTask
    fields = ("id", "state", "size", "indexed", "attempts", "worker", "started", "finished", "error")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(IndexJob)
class IndexJobAdmin(admin.ModelAdmin):
    """Progress of the photos queued for the indexing workers (read from their tasks' rows)."""

    list_display = ("id", "label", "created", "photos", "progress", "failed")
    readonly_fields = ("label", "created", "photos", "progress", "failed")
    inlines = [IndexTaskInline]

    @admin.display(description=_("progress"))
    def progress(self, obj: IndexJob) -> str:
        state = jobs.progress(obj)
        running = _(", %(n)d task(s) running") % {"n": state.running_tasks} if state.running_tasks else ""
        return _("%(finished)d of %(photos)d photos (%(percent)d%%)%(running)s") % {
            "finished": state.finished, "photos": state.photos, "percent": state.percent, "running": running}

    @admin.display(description=_("not indexed"))
    def failed(self, obj: IndexJob) -> str:
        state = jobs.progress(obj)
        return "; ".join(f"{pid}: {reason}" for pid, reason in state.failed_photos[:20]) or "—"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

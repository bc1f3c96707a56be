"""Past searches in Django's admin: staff may look and delete (the photo files go with them), not add or change."""

from __future__ import annotations

from django.contrib import admin

from .models import HistoryEntry


@admin.register(HistoryEntry)
class HistoryEntryAdmin(admin.ModelAdmin):
    list_display = ("user", "created", "filters")
    list_filter = ("created",)
    search_fields = ("user__username",)
    date_hierarchy = "created"
    readonly_fields = ("user", "token", "filters", "created")
    list_select_related = ("user",)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

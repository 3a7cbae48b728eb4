"""Read-only admin for renders and their audit trail: state changes go through lifecycle."""

from __future__ import annotations

from typing import Any

from django.contrib import admin

from imaging.models import IdempotencyRecord, Render, RenderEvent
from platform_site.admin_base import ReadOnlyAdmin


class RenderEventInline(admin.TabularInline):
    model = RenderEvent
    extra = 0
    can_delete = False
    readonly_fields = ("created_at", "from_status", "to_status", "actor", "note")
    fields = readonly_fields

    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False


@admin.register(Render)
class RenderAdmin(ReadOnlyAdmin):
    list_display = ("public_id", "user", "status", "error_code", "credits_charged", "created_at",
                    "finished_at")
    list_filter = ("status", "error_code", "output_format")
    search_fields = ("public_id", "user__email")
    date_hierarchy = "created_at"
    list_select_related = ("user",)
    inlines = [RenderEventInline]


@admin.register(RenderEvent)
class RenderEventAdmin(ReadOnlyAdmin):
    list_display = ("render", "from_status", "to_status", "actor", "created_at")
    list_filter = ("to_status", "actor")
    search_fields = ("render__public_id",)


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(ReadOnlyAdmin):
    list_display = ("key", "user", "state", "response_status", "render", "created_at")
    list_filter = ("state",)
    search_fields = ("key", "user__email")

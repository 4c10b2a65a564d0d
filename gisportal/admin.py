"""Admin of the audit log: read-only for admins (no add, change or delete, whatever the permissions say)."""
from django.contrib import admin

from .models import AuditEntry
from .permissions import is_admin


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ("seq", "created_at", "username", "action", "status", "object_type", "object_id", "summary")
    list_filter = ("action", "status", "created_at")
    search_fields = ("username", "summary", "object_id", "result_digest", "entry_hash")
    date_hierarchy = "created_at"
    ordering = ("-seq",)
    readonly_fields = [f.name for f in AuditEntry._meta.fields]
    list_select_related = ("user",)
    actions = None

    def has_view_permission(self, request, obj=None):
        return is_admin(request.user)

    def has_module_permission(self, request):
        return is_admin(request.user)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

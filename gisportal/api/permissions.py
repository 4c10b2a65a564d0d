"""DRF permission classes over the role rules of :mod:`gisportal.permissions`."""
from __future__ import annotations

from rest_framework.permissions import SAFE_METHODS, BasePermission

from layers.registry import LAYERS

from .. import permissions as rules


class LayerAccess(BasePermission):
    """Read a layer with its model's view permission; write only as an admin."""

    message = "无权访问该图层"

    def has_permission(self, request, view) -> bool:
        kind = view.kwargs.get("kind")
        if kind is None or kind not in LAYERS:  # the view answers 404 for an unknown kind
            return request.user.is_authenticated
        if request.method in SAFE_METHODS:
            return rules.can_view_layer(request.user, kind)
        return rules.can_edit_layer(request.user, kind)


class RunsAnalysis(BasePermission):
    """Coverage and siting runs: emergency officials and admins."""

    message = "只有应急管理人员和管理员可以运行覆盖分析和选址"

    def has_permission(self, request, view) -> bool:
        return rules.can_run_analysis(request.user)


class Reviews(BasePermission):
    """Housing project reviews: planners (their own) and admins."""

    message = "只有规划人员和管理员可以提交和审查项目"

    def has_permission(self, request, view) -> bool:
        return rules.can_review(request.user)


class Imports(BasePermission):
    """Some layer this user may import into (the view checks the asked kind)."""

    message = "无权导入数据"

    def has_permission(self, request, view) -> bool:
        return rules.can_import(request.user)

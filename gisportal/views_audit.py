"""The audit log page (issue 9, item 6): admins only, read-only; filters, pages, and the chain's state.

Add to gisportal/urls.py: ``from . import views_audit`` and ``urlpatterns += views_audit.urlpatterns``.
"""
from __future__ import annotations

import datetime as dt
from urllib.parse import urlencode

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_GET

from .audit import verify_chain
from .models import AuditEntry
from .permissions import is_admin

PAGE_SIZE = 50


class AuditFilterForm(forms.Form):
    action = forms.ChoiceField(label=_("操作"), required=False,
                               choices=[("", _("全部"))] + list(AuditEntry.Action.choices))
    status = forms.ChoiceField(label=_("状态"), required=False,
                               choices=[("", _("全部"))] + list(AuditEntry.Status.choices))
    user = forms.CharField(label=_("用户名"), required=False, max_length=150)
    date_from = forms.DateField(label=_("开始日期"), required=False,
                                widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(label=_("结束日期"), required=False, widget=forms.DateInput(attrs={"type": "date"}))


def _day_start(day: dt.date) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time.min))


def audit_filter(qs, data: dict):
    """Entries matching the cleaned filter form ``data`` (dates in the site's time zone, both inclusive)."""
    if data.get("action"):
        qs = qs.filter(action=data["action"])
    if data.get("status"):
        qs = qs.filter(status=data["status"])
    if data.get("user"):
        qs = qs.filter(username=data["user"].strip())
    if data.get("date_from"):
        qs = qs.filter(created_at__gte=_day_start(data["date_from"]))
    if data.get("date_to"):
        qs = qs.filter(created_at__lt=_day_start(data["date_to"] + dt.timedelta(days=1)))
    return qs


@login_required
@require_GET
def audit_log(request: HttpRequest) -> HttpResponse:
    if not is_admin(request.user):
        raise PermissionDenied
    form = AuditFilterForm(request.GET or None)
    data = form.cleaned_data if form.is_bound and form.is_valid() else {}
    qs = audit_filter(AuditEntry.objects.select_related("user").order_by("-seq"), data)
    page = Paginator(qs, PAGE_SIZE).get_page(request.GET.get("page"))
    query = {k: v for k, v in request.GET.items() if k != "page" and v}
    head = AuditEntry.objects.order_by("-seq").values("seq", "entry_hash", "created_at").first()
    return render(request, "audit/log.html", {
        "form": form, "page": page, "broken": verify_chain(), "head": head,
        "total": AuditEntry.objects.count(), "query": urlencode(query)})


urlpatterns = [
    path("audit/", audit_log, name="audit_log"),
]

__all__ = ["AuditFilterForm", "audit_filter", "audit_log", "urlpatterns"]

"""The import page (issue 8): upload a file (or a zip) into one layer and see the report.

Thin: the upload is written under a name we choose in a temporary directory and handed to
``importers.services.import_file`` (the path ``manage.py import_layer`` and the API take), which never
raises for bad input and writes nothing unless the whole file passes. The page shows the report (every
issue with its feature/row number) and the recent ImportRuns.

Access: admins (superusers or the ``admin`` group) import every KIND; anyone else only the KINDs whose
model they may add (``layers.add_<model>``); nobody else sees the page (403).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path
from django.utils.translation import gettext as _g
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_http_methods

from importers import mapping as fieldmap
from importers import services as import_services
from importers.models import ImportRun
from layers.registry import LAYERS

from .views_review import is_admin


def import_permission(kind: str) -> str:
    model = fieldmap.SPECS[kind].model
    return f"{model._meta.app_label}.add_{model._meta.model_name}"


def allowed_kinds(user) -> list[str]:
    """The KINDs this user may import into, in registry order."""
    if not user.is_authenticated:
        return []
    admin = is_admin(user)
    return [k for k in fieldmap.SPECS if admin or user.has_perm(import_permission(k))]


def _label(kind: str) -> str:
    return str(LAYERS[kind].label) if kind in LAYERS else kind


class ImportForm(forms.Form):
    file = forms.FileField(label=_("文件"), help_text=_(
        "Shapefile（.zip 或 .shp）、GeoJSON、GeoPackage、CSV、KML/KMZ、DXF"))
    kind = forms.ChoiceField(label=_("图层"))
    mode = forms.ChoiceField(label=_("导入方式"), initial="append", choices=[
        ("append", _("追加")), ("upsert", _("按编码更新或追加")), ("replace", _("替换整个图层"))])
    srid = forms.CharField(label=_("坐标系 EPSG（可选）"), required=False, max_length=16,
                           help_text=_("留空则按文件（.prj、crs）判断"))
    encoding = forms.CharField(label=_("字符编码（可选）"), required=False, max_length=32,
                               help_text=_("如 GBK、UTF-8；留空自动识别"))
    layer = forms.CharField(label=_("图层名（GeoPackage/DXF，可选）"), required=False, max_length=128)
    mapping = forms.CharField(label=_("字段对应（可选）"), required=False,
                              widget=forms.Textarea(attrs={"rows": 2, "cols": 30}),
                              help_text=_("每行一个：字段=属性名，如 name=MC"))
    gcj02 = forms.BooleanField(label=_("坐标为 GCJ-02（火星坐标）"), required=False)
    make_valid = forms.BooleanField(label=_("自动修复无效几何"), required=False)
    dry_run = forms.BooleanField(label=_("只检查，不写入"), required=False, initial=True)

    def __init__(self, *args, kinds: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["kind"].choices = [(k, f"{_label(k)}（{k}）") for k in kinds]

    def clean_file(self):
        f = self.cleaned_data["file"]
        limit = import_services.limits_from_settings().max_file_bytes
        if f.size > limit:
            raise forms.ValidationError(_g("文件 %(size)s 字节，超过上限 %(limit)s 字节")
                                        % {"size": f"{f.size:,}", "limit": f"{limit:,}"})
        return f

    def clean_mapping(self):
        lines = [ln.strip() for ln in self.cleaned_data.get("mapping", "").splitlines() if ln.strip()]
        for ln in lines:
            if "=" not in ln:
                raise forms.ValidationError(_g("应写成 字段=属性名，收到 %(line)s") % {"line": ln})
        return lines


def _safe_suffix(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return suffix if suffix.isascii() and suffix[1:].isalnum() and len(suffix) <= 8 else ""


def run_upload(form: ImportForm, user) -> import_services.ImportReport:
    """Write the upload to a temporary file and import it (one call of ``import_file``)."""
    d = form.cleaned_data
    upload = d["file"]
    with tempfile.TemporaryDirectory(prefix="gisportal-upload-") as tmp:
        p = Path(tmp) / f"upload{_safe_suffix(upload.name)}"
        with open(p, "wb") as out:
            for chunk in upload.chunks():
                out.write(chunk)
        return import_services.import_file(
            d["kind"], p, srid=d["srid"].strip() or None, encoding=d["encoding"].strip() or None,
            layer=d["layer"].strip() or None, gcj02=d["gcj02"], mapping=d["mapping"] or None, mode=d["mode"],
            make_valid=d["make_valid"], dry_run=d["dry_run"], user=user,
            file_name=Path(upload.name).name[:200] or "upload")


def recent_runs(user, n: int = 20):
    qs = ImportRun.objects.select_related("user")
    if not is_admin(user):
        qs = qs.filter(user=user)
    return list(qs.order_by("-started_at", "-pk")[:n])


@login_required
@require_http_methods(["GET", "POST"])
def import_page(request: HttpRequest) -> HttpResponse:
    kinds = allowed_kinds(request.user)
    if not kinds:
        raise PermissionDenied
    report = None
    status = 200
    if request.method == "POST":
        form = ImportForm(request.POST, request.FILES, kinds=kinds)
        if request.POST.get("kind") and request.POST["kind"] in fieldmap.SPECS and request.POST["kind"] not in kinds:
            raise PermissionDenied
        if form.is_valid():
            report = run_upload(form, request.user).as_dict()
            status = 200 if report["ok"] else 422
        else:
            status = 400
    else:
        form = ImportForm(kinds=kinds, initial={"kind": request.GET.get("kind") if request.GET.get("kind") in kinds
                                                else kinds[0]})
    return render(request, "importer/page.html", {
        "form": form, "report": report, "runs": recent_runs(request.user),
        "kind_label": _label(report["kind"]) if report else ""}, status=status)


#: Add to gisportal/urls.py: ``urlpatterns += views_import.urlpatterns``.
urlpatterns = [
    path("import/", import_page, name="import"),
]

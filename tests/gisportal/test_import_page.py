"""The import page (gisportal/views_import.py): upload -> importers.services.import_file -> report.

This module is the URLconf of its tests, so the page is tested whether or not gisportal/urls.py includes it.
"""
from pathlib import Path

import pytest

from gisportal import urls as portal_urls
from gisportal import views_import
from importers.models import ImportRun
from layers import models, services
from tests.importers.conftest import hierarchy  # noqa: F401  (fixture: district 999001 and two communities)

urlpatterns = list(views_import.urlpatterns) + list(portal_urls.urlpatterns)
pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]
ROOT = Path(__file__).resolve().parents[2] / "fixtures"


def _login(client, django_user_model, name, role=None, superuser=False):
    user = (django_user_model.objects.create_superuser if superuser else django_user_model.objects.create_user)(
        name, password="x")
    if role:
        user.groups.add(services.roles_ensure()[role])
    client.force_login(user)
    return user


def _post(client, path, **data):
    with open(path, "rb") as fh:
        return client.post("/import/", {"file": fh, "mode": "append", **data})


def test_login_and_permissions(client, django_user_model):
    assert client.get("/import/").status_code == 302
    _login(client, django_user_model, "999_field", "field_staff")
    assert client.get("/import/").status_code == 403
    assert _post(client, ROOT / "formats" / "facilities.csv", kind="facilities").status_code == 403
    _login(client, django_user_model, "999_planner", "planner")
    assert client.get("/import/").status_code == 403  # planners add housing projects, no base layer
    # an emergency official may add candidate sites, and only those
    user = _login(client, django_user_model, "999_official", "emergency_official")
    assert views_import.allowed_kinds(user) == ["candidates"]
    page = client.get("/import/")
    assert page.status_code == 200 and 'value="candidates"' in page.content.decode()
    assert 'value="facilities"' not in page.content.decode()
    before = models.ServiceFacility.objects.count()
    assert _post(client, ROOT / "formats" / "facilities.csv", kind="facilities").status_code == 403
    assert models.ServiceFacility.objects.count() == before


def test_dry_run_then_import_and_recent_runs(client, django_user_model, hierarchy):  # noqa: F811
    _login(client, django_user_model, "999_admin", "admin")
    before = models.ServiceFacility.objects.count()
    runs = ImportRun.objects.count()
    resp = _post(client, ROOT / "formats" / "facilities.csv", kind="facilities", dry_run="on")
    assert resp.status_code == 200
    html = resp.content.decode()
    assert 'data-status="dry_run"' in html and 'data-ok="true"' in html
    assert models.ServiceFacility.objects.count() == before and ImportRun.objects.count() == runs
    resp = _post(client, ROOT / "formats" / "facilities.csv", kind="facilities")
    assert resp.status_code == 200 and resp.context["report"]["created"] == 2
    assert models.ServiceFacility.objects.count() == before + 2
    run = ImportRun.objects.latest("pk")
    assert (run.status, run.kind, run.file_name, run.created) == ("ok", "facilities", "facilities.csv", 2)
    page = client.get("/import/").content.decode()
    assert 'id="import-runs"' in page and "facilities.csv" in page


def test_errors_show_rows_and_nothing_is_written(client, django_user_model, hierarchy):  # noqa: F811
    _login(client, django_user_model, "999_super", superuser=True)
    before = models.District.objects.count()
    resp = _post(client, ROOT / "bad" / "duplicate_codes.geojson", kind="districts")
    assert resp.status_code == 422
    report = resp.context["report"]
    assert not report["ok"] and report["created"] == 0 and report["error_count"] >= 1
    html = resp.content.decode()
    assert "未写入任何数据" in html and 'id="import-issues"' in html
    rows = [i for i in report["issues"] if i["level"] == "error" and i["row"] is not None]
    assert rows and f'data-row="{rows[0]["row"]}"' in html
    assert models.District.objects.count() == before
    assert ImportRun.objects.latest("pk").status == "refused"


def test_bad_form_input(client, django_user_model, tmp_path):
    _login(client, django_user_model, "999_super", superuser=True)
    assert client.post("/import/", {"kind": "districts", "mode": "append"}).status_code == 400  # no file
    p = tmp_path / "x.geojson"
    p.write_text('{"type": "FeatureCollection", "features": []}', encoding="utf-8")
    assert _post(client, p, kind="districts", mapping="no-equals-sign").status_code == 400
    assert _post(client, p, kind="nonsense").status_code == 400
    # a VRT renamed .geojson is refused by the importer's content check, with a reason
    p.write_text("<OGRVRTDataSource></OGRVRTDataSource>", encoding="utf-8")
    resp = _post(client, p, kind="districts")
    assert resp.status_code == 422 and 'data-code="vrt_refused"' in resp.content.decode()

"""The grid export page and the job pages: a field worker gets a KML of their own grids, offline."""
import xml.etree.ElementTree as ET
import zipfile
from io import BytesIO

import pytest
from django.test import Client

from layers import models
from tests.gisportal.api_helpers import make_users

pytestmark = pytest.mark.django_db
KML = "{http://www.opengis.net/kml/2.2}"


@pytest.fixture
def users():
    return make_users()


def _client(user):
    c = Client()
    c.force_login(user)
    return c


def test_field_worker_exports_own_grids_as_kmz(users):
    worker = users["field_staff"]
    mine = models.Grid.objects.filter(worker=worker)
    community = mine.first().community.code
    c = _client(worker)
    page = c.get("/exports/grids/")
    assert page.status_code == 200 and community in page.content.decode()
    resp = c.post("/exports/grids/", {"scope": "community", "code": community, "format": "kmz",
                                      "crs": "gcj02", "paper": "A4"})
    assert resp.status_code == 302
    job = models.Job.objects.get(pk=int(resp["Location"].rstrip("/").rsplit("/", 1)[-1]))
    assert job.kind == "export" and job.user == worker and job.status == "done"  # ImmediateBackend
    detail = c.get(f"/jobs/{job.pk}/").content.decode()
    assert 'id="job-download"' in detail and 'http-equiv="refresh"' not in detail
    data = b"".join(c.get(f"/jobs/{job.pk}/download/").streaming_content)
    with zipfile.ZipFile(BytesIO(data)) as z:
        root = ET.fromstring(z.read(z.namelist()[0]))
    names = sorted(p.find(f"{KML}name").text for p in root.iter(f"{KML}Placemark"))
    assert names == sorted(mine.values_list("code", flat=True))  # only their grids, one Placemark each


def test_field_worker_cannot_export_another_community(users):
    worker = users["field_staff"]
    other = models.Community.objects.exclude(grids__worker=worker).filter(grids__isnull=False).first()
    c = _client(worker)
    resp = c.post("/exports/grids/", {"scope": "community", "code": other.code, "format": "geojson",
                                      "crs": "wgs84", "paper": "A4"})
    job = models.Job.objects.get(pk=int(resp["Location"].rstrip("/").rsplit("/", 1)[-1]))
    assert job.status == "failed" and not job.result_file
    assert c.get(f"/jobs/{job.pk}/download/").status_code == 404
    assert 'id="job-error"' in c.get(f"/jobs/{job.pk}/").content.decode()


def test_bad_code_is_refused_without_a_job(users):
    c = _client(users["admin"])
    before = models.Job.objects.count()
    resp = c.post("/exports/grids/", {"scope": "grid", "code": "13x", "format": "pdf", "crs": "wgs84",
                                      "paper": "A4"})
    assert resp.status_code == 200 and models.Job.objects.count() == before


def test_jobs_are_private_and_cancellable_while_queued(users):
    from gisportal import tasks

    job = tasks.job_queue(models.Job.Kind.EXPORT, {"layer": "grids", "format": "csv"}, user=users["planner"])
    planner, other = _client(users["planner"]), _client(users["emergency_official"])
    page = planner.get(f"/jobs/{job.pk}/").content.decode()
    assert 'http-equiv="refresh"' in page and "取消任务" in page  # a queued job refreshes itself
    assert other.get(f"/jobs/{job.pk}/").status_code == 404
    assert planner.post(f"/jobs/{job.pk}/cancel/").status_code == 302
    assert models.Job.objects.get(pk=job.pk).cancel_requested
    assert tasks.export_job.call(job.pk) == "cancelled"
    assert str(job.pk) in planner.get("/jobs/").content.decode()

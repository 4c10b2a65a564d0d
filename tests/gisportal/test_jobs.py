"""Background jobs (gisportal/tasks.py): coverage, siting, exports and imports as tasks with progress,
cancellation (rolled back) and stored results; and one run of the real database worker in a subprocess.

Most tests use the ImmediateBackend (the task runs inside ``enqueue``); the last one enqueues on the
database backend and starts ``manage.py db_worker`` as a separate process, as production does.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings

from gisportal import tasks
from layers import models, services, services_coverage
from tests.gisportal.api_helpers import client_for, demo, users  # noqa: F401 (fixtures)
from tests.importers.conftest import hierarchy  # noqa: F401 (fixture)


ROOT = Path(__file__).resolve().parents[2]
API = "/api/v1"
Job = models.Job
COVERAGE = {"kind": "fire_stations", "demand": "grids", "method": "euclidean", "radius_m": 500.0}


@pytest.mark.django_db
def test_coverage_job_adopts_the_queued_job_and_matches_the_service(users, demo):
    c = client_for(users["emergency_official"])
    n = Job.objects.count()
    resp = c.post(f"{API}/coverage/", COVERAGE, format="json")
    assert resp.status_code == 202, resp.content
    job = resp.json()
    assert Job.objects.count() == n + 1  # one row: the service adopted the queued Job
    assert job["status"] == "done" and job["progress"] == 1.0
    assert job["result"]["job_id"] == job["id"]
    assert job["params"]["request"]["kind"] == "fire_stations" and job["params"]["rules_version"]
    assert job["data_version"]
    direct = services_coverage.coverage_compute(**{k: v for k, v in COVERAGE.items()})
    for key in ("population_total", "population_covered", "share_covered"):
        assert job["result"][key] == direct[key], key
    assert job["result"]["grids"] == direct["grids"]
    # the coverage page can show the API's run
    page = client_for(users["emergency_official"], csrf=True)  # a session login
    assert page.get(f"/coverage/jobs/{job['id']}/").status_code == 200
    listed = c.get(f"{API}/jobs/", {"kind": "coverage"}).json()["results"]
    assert job["id"] in [j["id"] for j in listed] and "result" not in listed[0]
    assert c.get(f"{API}/jobs/", {"kind": "nonsense"}).status_code == 400


@pytest.mark.django_db
def test_bad_input_fails_the_job_with_the_reason(users, demo):
    c = client_for(users["emergency_official"])
    resp = c.post(f"{API}/coverage/", {"kind": "shelters", "facility_kind": "community_micro"}, format="json")
    job = resp.json()
    assert resp.status_code == 202 and job["status"] == "failed"
    assert job["result"]["error"]["code"] == "facility_kind" and job["error"]
    # the request shape itself is checked before any job
    assert c.post(f"{API}/coverage/", {"kind": "unicorns"}, format="json").status_code == 400
    assert c.post(f"{API}/siting/", {"kind": "shelters", "objective": "mclp"}, format="json").status_code == 400


@pytest.mark.django_db
def test_siting_job(users, demo):
    community = models.Community.objects.filter(grids__population__gt=0).order_by("code").first()
    c = client_for(users["emergency_official"])
    resp = c.post(f"{API}/siting/", {"kind": "fire_stations", "objective": "mclp", "p": 2, "radius_m": 500,
                                     "area": community.code, "demand": "grids", "time_limit_s": 20}, format="json")
    assert resp.status_code == 202, resp.content
    job = resp.json()
    assert job["status"] == "done", job["error"]
    doc = job["result"]
    assert doc["job_id"] == job["id"] and doc["count"] <= 2 and len(doc["selected"]) == doc["count"]
    assert doc["population_covered"] >= doc["population_existing"] - 1e-6
    # a candidates path from a request is never read
    job = Job.objects.create(kind="siting", status="queued", user=users["emergency_official"],
                             params={"kind": "fire_stations", "objective": "lscp", "radius_m": 500,
                                     "candidates": "/etc/passwd"})
    assert tasks.siting_job.call(job.pk) == "failed"
    job.refresh_from_db()
    assert job.result["error"]["code"] == "candidates"


@pytest.mark.django_db
def test_siting_job_with_inline_exclusion_zones(users, demo, tmp_path):
    """The API takes exclusion zones as inline GeoJSON (never a path); the same run as the service's."""
    import shapely
    from pyproj import Transformer

    from layers import services_siting

    community = models.Community.objects.filter(grids__population__gt=0).order_by("-population", "code").first()
    x0, y0, x1, y1 = community.geom.extent
    ring = [(x0 - 10, y0 - 10), ((x0 + x1) / 2, y0 - 10), ((x0 + x1) / 2, y1 + 10), (x0 - 10, y1 + 10)]
    to_ll = Transformer.from_crs(settings.GIS_SRID, 4326, always_xy=True)
    ll = [list(to_ll.transform(x, y)) for x, y in ring + ring[:1]]
    zone = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ll]}}]}
    req = {"kind": "fire_stations", "objective": "lscp", "radius_m": 500, "area": community.code,
           "time_limit_s": 20}
    c = client_for(users["emergency_official"])
    plain = c.post(f"{API}/siting/", req, format="json").json()
    resp = c.post(f"{API}/siting/", {**req, "exclude": zone}, format="json")
    assert resp.status_code == 202, resp.content
    job = resp.json()
    assert job["status"] == "done", job["error"]
    cands = job["result"]["candidates"]
    assert cands["excluded_zone"] > 0
    assert cands["count"] == plain["result"]["candidates"]["count"] - cands["excluded_zone"]
    poly = shapely.Polygon(ring)
    assert not any(poly.intersects(shapely.Point(s["x"], s["y"])) for s in job["result"]["selected"])
    assert job["params"]["request"]["exclude"] == zone and job["params"]["exclude"] == "file:exclude.geojson"
    # the service with the same zones as a file gives the same sites
    path = tmp_path / "zone.geojson"
    path.write_text(json.dumps(zone), encoding="utf-8")
    direct = services_siting.siting_compute(kind="fire_stations", objective="lscp", radius_m=500,
                                            area=community.code, exclude=str(path))
    assert direct["selected"] == job["result"]["selected"] and direct["candidates"] == cands
    # a bad zone: refused before any job, or the job fails with the reason
    assert c.post(f"{API}/siting/", {**req, "exclude": [1, 2]}, format="json").status_code == 400
    bad = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {},
                                                      "geometry": {"type": "Point", "coordinates": ll[0]}}]}
    job = c.post(f"{API}/siting/", {**req, "exclude": bad}, format="json").json()
    assert job["status"] == "failed" and job["result"]["error"]["code"] == "exclude_file"


@pytest.mark.django_db
def test_cancel_while_running_marks_cancelled_and_keeps_no_result(users, demo, monkeypatch):
    original = services_coverage._compute

    def compute_then_cancel(*args, **kwargs):
        Job.objects.filter(status=Job.Status.RUNNING).update(cancel_requested=True)
        return original(*args, **kwargs)

    monkeypatch.setattr(services_coverage, "_compute", compute_then_cancel)
    resp = client_for(users["emergency_official"]).post(f"{API}/coverage/", COVERAGE, format="json")
    job = resp.json()
    assert job["status"] == "cancelled" and job["result"] is None and job["cancel_requested"]


@pytest.mark.django_db
@pytest.mark.parametrize("objective", ["mclp", "cmclp"])
def test_cancel_during_the_siting_curve_stops_after_that_k(users, demo, monkeypatch, objective):
    """The k-curve reports progress per k and stops at the next k once cancellation is asked."""
    from layers.analysis import siting

    seen = []
    name = "capacitated_curve" if objective == "cmclp" else "coverage_curve"
    original = getattr(siting, name)

    def curve_then_cancel(*args, progress=None, **kwargs):
        def spy(k, k_max):
            seen.append(Job.objects.filter(status=Job.Status.RUNNING).values_list("progress", "message").first())
            if k == 2:
                Job.objects.filter(status=Job.Status.RUNNING).update(cancel_requested=True)
            progress(k, k_max)
        return original(*args, progress=spy, **kwargs)

    monkeypatch.setattr(siting, name, curve_then_cancel)
    community = models.Community.objects.filter(grids__population__gt=0).order_by("code").first()
    resp = client_for(users["emergency_official"]).post(f"{API}/siting/", {
        "kind": "shelters", "objective": objective, "p": 1, "radius_m": 500, "area": community.code,
        "curve_k": 5, "time_limit_s": 20}, format="json")
    job = resp.json()
    assert job["status"] == "cancelled" and job["result"] is None and job["cancel_requested"]
    assert len(seen) == 2  # k = 1 went through, k = 2 was the last; k = 3..5 never ran
    assert seen[1][1] == "curve: k = 1 of 5" and 0.7 < seen[1][0] < 0.9


@pytest.mark.django_db
def test_cancel_during_the_siting_solve_stops_the_solver(users, demo, monkeypatch):
    """Cancelling while the solver runs stops it within about a second (the service polls the Job
    through ``siting.interruptible``), not at its time limit: a 600 s LSCP of the whole demo city
    (never proven, it would run to the limit) returns early and the job ends cancelled."""
    from layers.analysis import siting

    original, runs = siting.lscp, []

    def cancel_then_solve(A, existing=None, time_limit_s=60.0, **kwargs):
        Job.objects.filter(status=Job.Status.RUNNING).update(cancel_requested=True)
        t = time.perf_counter()
        res = original(A, existing, 600.0, **kwargs)
        runs.append((time.perf_counter() - t, res.status))
        return res

    monkeypatch.setattr(siting, "lscp", cancel_then_solve)
    resp = client_for(users["emergency_official"]).post(f"{API}/siting/", {
        "kind": "fire_stations", "objective": "lscp", "radius_m": 500, "time_limit_s": 600}, format="json")
    job = resp.json()
    assert job["status"] == "cancelled" and job["result"] is None and job["cancel_requested"]
    assert len(runs) == 1 and runs[0][1] == "time_limit" and runs[0][0] < 120, runs


@pytest.mark.django_db
def test_cancel_queued_job_and_permissions(users):
    job = tasks.job_queue(Job.Kind.COVERAGE, dict(COVERAGE), user=users["emergency_official"])
    other = client_for(users["planner"])
    assert other.post(f"{API}/jobs/{job.pk}/cancel/").status_code == 404  # not visible to a planner
    analyst = type(users["planner"]).objects.create_user("999_analyst2", password="x")
    analyst.groups.add(*users["emergency_official"].groups.all())
    assert client_for(analyst).get(f"{API}/jobs/{job.pk}/").status_code == 200  # shared analysis runs
    assert client_for(analyst).post(f"{API}/jobs/{job.pk}/cancel/").status_code == 403  # not the owner's
    resp = client_for(users["emergency_official"]).post(f"{API}/jobs/{job.pk}/cancel/")
    assert resp.status_code == 202 and resp.json()["status"] == "cancelled"
    assert tasks.coverage_job.call(job.pk) == "cancelled"  # a late task does not run it
    job.refresh_from_db()
    assert job.result is None and job.started_at is None
    assert client_for(users["emergency_official"]).post(f"{API}/jobs/{job.pk}/cancel/").status_code == 409


@pytest.mark.django_db
def test_cancelled_import_rolls_back(users, hierarchy, monkeypatch):  # noqa: F811
    from django.core.files.uploadedfile import SimpleUploadedFile

    path = ROOT / "fixtures" / "formats" / "facilities.csv"
    original = services.job_progress

    def cancel_at_write(job, fraction, message=""):
        if message.startswith("write"):
            Job.objects.filter(pk=job.pk).update(cancel_requested=True)
        return original(job, fraction, message)

    before = models.ServiceFacility.objects.count()
    c = client_for(users["admin"])
    monkeypatch.setattr(services, "job_progress", cancel_at_write)
    job = c.post(f"{API}/imports/", {"file": SimpleUploadedFile(path.name, path.read_bytes()),
                                     "kind": "facilities"}, format="multipart").json()
    assert job["status"] == "cancelled", job
    assert models.ServiceFacility.objects.count() == before  # the write rolled back
    assert not models.ServiceFacility.objects.filter(code="999F001").exists()
    monkeypatch.setattr(services, "job_progress", original)
    job = c.post(f"{API}/imports/", {"file": SimpleUploadedFile(path.name, path.read_bytes()),
                                     "kind": "facilities"}, format="multipart").json()
    assert job["status"] == "done", job
    assert job["result"]["created"] == 2 and job["progress"] == 1.0
    assert models.ServiceFacility.objects.count() == before + 2


@pytest.mark.django_db
def test_field_worker_atlas_pdf(users, demo):
    c = client_for(users["field_staff"])
    job = c.post(f"{API}/exports/", {"layer": "grids", "format": "pdf"}, format="json").json()
    assert job["status"] == "done", job
    assert job["result"]["count"] == 2 and job["result"]["file_name"].endswith(".pdf")
    body = b"".join(c.get(job["file_url"]).streaming_content)
    assert body.startswith(b"%PDF")


# ------------------------------------------------------------------ the real worker
def _database_url(conn) -> str | None:
    sd = conn.settings_dict
    if conn.vendor == "sqlite":
        name = str(sd["NAME"])
        if name == ":memory:" or "mode=memory" in name:
            return None
        return "spatialite:///" + os.path.abspath(name)
    user, pw = quote(sd.get("USER") or "", safe=""), quote(sd.get("PASSWORD") or "", safe="")
    return f"postgis://{user}:{pw}@{sd.get('HOST') or '127.0.0.1'}:{sd.get('PORT') or 5432}/{sd['NAME']}"


@pytest.mark.slow
def test_real_database_worker_runs_a_coverage_job(django_db_setup, django_db_blocker):
    """Enqueue on the database backend, start `manage.py db_worker` in a subprocess, wait for the Job."""
    from django.db import connection
    from django_tasks_db.models import DBTaskResult

    with django_db_blocker.unblock():
        url = _database_url(connection)
        if url is None:
            pytest.skip("an in-memory SQLite test database cannot be shared with a worker process")
        if not models.FireStation.objects.exists():
            pytest.skip("the demo city is not loaded")
        job = tasks.job_queue(Job.Kind.COVERAGE, dict(COVERAGE))
        handle = tasks.job_enqueue(job, backend="database")
        assert Job.objects.get(pk=job.pk).status == Job.Status.QUEUED  # nothing ran in this process
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "gisportal.settings_test", "DATABASE_URL": url,
               "GISPORTAL_DEV_KEY": "1"}
        cmd = [sys.executable, "manage.py", "db_worker", "--backend", "database", "--max-tasks", "1",
               "--no-startup-delay", "--interval", "0.2"]
        direct_job = None
        try:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True)
            seen_progress = set()
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                row = Job.objects.filter(pk=job.pk).values("status", "progress").first()
                seen_progress.add(row["progress"])
                if row["status"] in (Job.Status.DONE, Job.Status.FAILED, Job.Status.CANCELLED):
                    break
                time.sleep(0.2)
            out, _ = proc.communicate(timeout=60)
            job.refresh_from_db()
            assert job.status == Job.Status.DONE, (job.status, job.error, out[-2000:])
            assert proc.returncode == 0, out[-2000:]
            assert DBTaskResult.objects.get(id=handle.id).status == "SUCCESSFUL"
            print(f"\nworker: job {job.pk} done; progress values seen while polling: {sorted(seen_progress)}")
            direct = services_coverage.coverage_compute(**COVERAGE)
            direct_job = direct["job_id"]
            assert job.result["population_covered"] == direct["population_covered"]
            assert job.result["job_id"] == job.pk
        finally:
            if proc.poll() is None:
                proc.kill()
            Job.objects.filter(pk__in=[job.pk, direct_job or -1]).delete()
            DBTaskResult.objects.filter(id=handle.id).delete()

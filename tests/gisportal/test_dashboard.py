"""The dashboard (gisportal/views_dashboard.py): counts, coverage per district from the latest Jobs, reviews.

This module is the URLconf of its tests (the dashboard, review and coverage routes plus the portal's own).
"""
import pytest
from django.utils import timezone

from gisportal import urls as portal_urls
from gisportal import views_coverage, views_dashboard, views_review
from layers import models, selectors, services, services_coverage

urlpatterns = (list(views_dashboard.urlpatterns) + list(views_review.urlpatterns)
               + list(views_coverage.urlpatterns) + list(portal_urls.urlpatterns))
pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]


def _login(client, django_user_model, name, role):
    user = django_user_model.objects.create_user(name, password="x")
    user.groups.add(services.roles_ensure()[role])
    client.force_login(user)
    return user


def _job(kind, rows, share, **params):
    return models.Job.objects.create(
        kind=models.Job.Kind.COVERAGE, status=models.Job.Status.DONE, finished_at=timezone.now(),
        params={"kind": kind, "radius_m": 500.0, "method": "euclidean", **params},
        result={"share_covered": share, "areas": {"districts": rows, "streets": [], "communities": []}})


def test_login_required_and_field_staff_sees_counts_only(client, django_user_model):
    assert client.get("/dashboard/").status_code == 302
    _login(client, django_user_model, "999_field", "field_staff")
    resp = client.get("/dashboard/")
    assert resp.status_code == 200
    html = resp.content.decode()
    counts = selectors.layer_counts()
    for kind, n in counts.items():
        assert f'data-kind="{kind}"' in html
    assert [(l["kind"], l["count"]) for l in resp.context["layers"]] == list(counts.items())
    assert 'id="coverage-summary"' not in html and 'id="reviews-waiting"' not in html


def test_not_computed_yet_links_to_the_coverage_page(client, django_user_model):
    models.Job.objects.filter(kind="coverage").delete()
    _login(client, django_user_model, "999_official", "emergency_official")
    html = client.get("/dashboard/").content.decode()
    assert html.count('class="not-computed"') == 2 and 'href="/coverage/?kind=shelters"' in html


def test_latest_jobs_per_kind_and_district_shares(client, django_user_model):
    models.Job.objects.filter(kind="coverage").delete()
    _job("shelters", [{"code": "999001", "name": "旧", "population": 10.0, "covered": 1.0, "share": 0.1}], 0.1)
    new = _job("shelters", [{"code": "999001", "name": "甲区", "population": 1000.0, "covered": 250.0, "share": 0.25},
                            {"code": "999002", "name": "乙区", "population": 400.0, "covered": 400.0, "share": 1.0}], 0.464)
    fire = _job("fire_stations", [{"code": "999002", "name": "乙区", "population": 400.0, "covered": 100.0,
                                   "share": 0.25}], 0.25, facility_kind="community_micro")
    models.Job.objects.create(kind="coverage", status="failed", params={"kind": "fire_stations"})
    _login(client, django_user_model, "999_official", "emergency_official")
    resp = client.get("/dashboard/")
    jobs = dict((k, j) for k, _label, j in resp.context["coverage"]["jobs"])
    assert jobs == {"shelters": new, "fire_stations": fire}
    rows = {r["code"]: r for r in resp.context["coverage"]["districts"]}
    assert rows["999001"]["name"] == "甲区" and rows["999001"]["shelters"]["share"] == 0.25
    assert "fire_stations" not in rows["999001"]
    assert rows["999002"]["fire_stations"]["share"] == 0.25 and rows["999002"]["shelters"]["share"] == 1.0
    html = resp.content.decode()
    assert f'href="/coverage/jobs/{new.pk}/"' in html and "25%" in html and "100%" in html
    assert views_coverage.share_color(1.0) in html


def test_a_real_coverage_run_shows_up(client, django_user_model):
    if not models.Shelter.objects.filter(is_sample=True).exists():
        pytest.skip("the demo city is not loaded")
    user = _login(client, django_user_model, "999_official", "emergency_official")
    doc = services_coverage.coverage_compute(kind="fire_stations", radius_m=500.0, demand="grids", user=user)
    rows = {r["code"]: r for r in client.get("/dashboard/").context["coverage"]["districts"]}
    for d in doc["areas"]["districts"]:
        assert rows[d["code"]]["fire_stations"]["share"] == d["share"]


def test_reviews_waiting_are_the_users_own(client, django_user_model):
    from django.contrib.gis.geos import MultiPolygon, Polygon
    geom = MultiPolygon(Polygon.from_bbox((0, 0, 10, 10)), srid=4547)
    planner = _login(client, django_user_model, "999_planner", "planner")
    other = django_user_model.objects.create_user("999_other")
    mk = lambda name, status, user: models.HousingProject.objects.create(  # noqa: E731
        name=name, developer="d", households=1, status=status, submitted_by=user, geom=geom)
    mk("999甲", "submitted", planner)
    mk("999乙", "in_review", planner)
    mk("999丙", "approved", planner)
    mk("999丁", "submitted", other)
    resp = client.get("/dashboard/")
    r = resp.context["reviews"]
    assert (r["submitted"], r["in_review"]) == (1, 1)
    assert sorted(p.name for p in r["projects"]) == ["999乙", "999甲"]
    html = resp.content.decode()
    assert "999丁" not in html and "999丙" not in html

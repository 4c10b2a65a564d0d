"""The emergency official's and the field worker's jobs in headless Chromium, network cut off (issue 8)."""
import pytest

from .conftest import DEMO_PASSWORDS
from .test_map_page import _login

pytestmark = [pytest.mark.browser]


def test_emergency_official_runs_shelter_coverage(offline_page, portal):
    page = offline_page
    _login(page, "emergency_demo", DEMO_PASSWORDS["emergency_official"], next_url="/coverage/")
    page.select_option("#id_kind", "shelters")
    page.fill("#id_radius_m", "500")
    page.locator("#coverage-form button[type=submit]").click()
    page.wait_for_load_state()
    page.locator("#coverage-result").wait_for(timeout=60_000)
    headline = page.locator("#coverage-result table.headline").inner_text()
    assert "500" in headline and "%" in headline
    frame = page.frame_locator("#coverage-map")
    frame.locator(".leaflet-overlay-pane path").first.wait_for(timeout=60_000)
    assert frame.locator(".leaflet-overlay-pane path").count() > 100  # the grid choropleth
    page.screenshot(path=str(portal[2] / "coverage.png"), full_page=True)
    assert page.blocked == [] and page.js_errors == []


def test_field_worker_exports_atlas_and_is_refused_elsewhere(offline_page, portal):
    page = offline_page
    _login(page, "field_demo", DEMO_PASSWORDS["field_staff"], next_url="/exports/grids/")
    code = page.locator("#id_code").input_value()
    assert len(code) == 12  # their community is offered
    page.select_option("#id_format", "pdf")
    page.locator("#export-form button[type=submit]").click()
    page.wait_for_load_state()
    # the export runs on the background worker; the status page refreshes itself until it is done
    page.locator("#job-download").wait_for(timeout=120_000)
    assert page.locator("#job-status").get_attribute("data-status") == "done"
    pdf = page.request.get(page.base + page.locator("#job-download").get_attribute("href"))
    assert pdf.ok and pdf.body()[:5] == b"%PDF-"
    # another role's pages are refused
    assert page.goto(page.base + "/coverage/").status == 403
    assert page.goto(page.base + "/review/").status == 403
    page.screenshot(path=str(portal[2] / "export.png"), full_page=True)
    assert page.blocked == [] and page.js_errors == []


def test_emergency_official_sites_micro_fire_stations_for_every_grid(offline_page, portal):
    """Issue 6 from the page: the fewest new micro fire stations putting every grid's representative point
    within 500 m, proven optimal, listed and drawn on the map (the service's tests check the optimum)."""
    page = offline_page
    _login(page, "emergency_demo", DEMO_PASSWORDS["emergency_official"], next_url="/siting/")
    page.select_option("#id_kind", "fire_stations")
    page.select_option("#id_objective", "lscp")
    page.fill("#id_radius_m", "500")
    page.select_option("#id_demand", "grid_points")
    page.fill("#id_curve_k", "")
    page.locator("#siting-form button[type=submit]").click()
    page.wait_for_load_state()
    # queued on the background worker; the status page follows on to the result
    page.locator("#siting-result").wait_for(timeout=180_000)
    status = page.locator('#siting-result td[data-key="status"]').inner_text()
    assert "已证明最优" in status, status
    assert page.locator('#siting-result td[data-key="gap"]').inner_text() == "0.00%"
    count = int(page.locator('#siting-result td[data-key="count"]').inner_text())
    assert count > 100 and page.locator("#siting-sites tbody tr").count() == count
    assert "grid_points" in page.locator("#siting-result p.notice").first.inner_text()
    assert page.locator("#id_demand").input_value() == "grid_points"  # the form shows the run's choices
    frame = page.frame_locator("#siting-map")
    frame.locator(".leaflet-overlay-pane path").first.wait_for(timeout=60_000)
    assert frame.locator(".leaflet-overlay-pane path").count() >= count  # a reach circle per new site
    page.screenshot(path=str(portal[2] / "siting.png"), full_page=True)
    assert page.blocked == [] and page.js_errors == []

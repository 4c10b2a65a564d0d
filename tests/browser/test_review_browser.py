"""A planner reviews a housing project in headless Chromium with the network cut off (issue 4 + 8).

Needs the review pages in gisportal/urls.py (``urlpatterns += views_review.urlpatterns``): the ``portal``
fixture serves the real URL map and fixes the demo users' passwords (``DEMO_PASSWORDS``).
"""
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser]
FIX = Path(__file__).resolve().parents[2] / "fixtures" / "review"
from .conftest import DEMO_PASSWORDS

PLANNER_PASSWORD = DEMO_PASSWORDS["planner"]


def _login(page, username, password):
    page.goto(page.base + "/accounts/login/?next=/review/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.locator("main form button[type=submit]").click()
    page.wait_for_load_state()


def test_planner_submits_and_sees_the_verdict_and_the_map(offline_page, portal):
    page = offline_page
    _login(page, "planner_demo", PLANNER_PASSWORD)
    assert page.url.endswith("/review/"), page.url
    page.set_input_files("#id_file", str(FIX / "good_qiaodong.geojson"))
    page.locator("#review-form button[value=check]").click()
    page.wait_for_load_state()
    assert page.locator("#verdict").get_attribute("data-verdict") == "pass"
    rows = page.locator("#review-checks tbody tr")
    assert rows.count() == 10
    assert page.locator('#review-checks tr[data-code="SHELTER-REACH"]').get_attribute("data-status") == "pass"
    # the folium map (in an iframe) drew the site, the facilities, shelters and reach circles
    frame = page.frame_locator("#review-map")
    frame.locator(".leaflet-overlay-pane path").first.wait_for(timeout=30_000)
    assert frame.locator(".leaflet-overlay-pane path").count() >= 4
    labels = frame.locator(".leaflet-control-layers-overlays label").all_inner_texts()
    assert any("应急避难场所" in t for t in labels) and any("配套设施" in t for t in labels)
    page.screenshot(path=str(portal[2] / "review-check.png"))

    # save: the project page shows the stored report, its map and the PDF link
    page.locator("#save-form button[value=save]").click()
    page.wait_for_load_state()
    assert "/review/projects/" in page.url
    assert page.locator("#project-status").get_attribute("data-status") == "submitted"
    assert page.locator("#verdict").get_attribute("data-verdict") == "pass"
    page.frame_locator("#review-map").locator(".leaflet-overlay-pane path").first.wait_for(timeout=30_000)
    page.screenshot(path=str(portal[2] / "review-project.png"))
    assert page.blocked == [], f"requests left the machine: {page.blocked[:5]}"
    assert page.js_errors == []

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


def test_planner_rejects_a_failing_submission_with_a_comment(offline_page, portal):
    page = offline_page
    _login(page, "planner_demo", PLANNER_PASSWORD)
    page.set_input_files("#id_file", str(FIX / "fail_facility.geojson"))
    page.locator("#review-form button[value=check]").click()
    page.wait_for_load_state()
    assert page.locator("#verdict").get_attribute("data-verdict") == "fail"
    assert page.locator('#review-checks tr[data-code="FAC-IN-SITE"]').get_attribute("data-status") == "fail"
    # the failed parts are drawn in red on the map
    red = '.leaflet-overlay-pane path[stroke="#d7191c"], .leaflet-overlay-pane path[fill="#d7191c"]'
    frame = page.frame_locator("#review-map")
    frame.locator(red).first.wait_for(timeout=30_000)
    assert frame.locator(red).count() >= 1
    page.screenshot(path=str(portal[2] / "review-fail-check.png"))

    page.locator("#save-form button[value=save]").click()
    page.wait_for_load_state()
    assert page.locator("#project-status").get_attribute("data-status") == "submitted"
    page.frame_locator("#review-map").locator(red).first.wait_for(timeout=30_000)
    page.locator('#decide-form button[value="in_review"]').click()
    page.wait_for_load_state()
    assert page.locator("#project-status").get_attribute("data-status") == "in_review"
    comment = "设施不在用地内，请调整后重新提交"
    page.fill("#decide-comment", comment)
    page.locator('#decide-form button[value="rejected"]').click()
    page.wait_for_load_state()
    assert page.locator("#project-status").get_attribute("data-status") == "rejected"
    rejected = page.locator('#history li[data-action="rejected"]')
    assert rejected.count() == 1 and comment in rejected.inner_text()
    assert "planner_demo" in rejected.inner_text()
    page.screenshot(path=str(portal[2] / "review-rejected.png"), full_page=True)
    assert page.blocked == [], f"requests left the machine: {page.blocked[:5]}"
    assert page.js_errors == []


# The site of fixtures/review/good_qiaodong.geojson (lon, lat) and its community service point.
SITE = [(114.8887431, 40.8005133), (114.8911128, 40.800495), (114.8911308, 40.8018456), (114.8887611, 40.8018639)]
FACILITY = (114.8899, 40.8011)


def _px(page, lon, lat):
    """Page coordinates of a lon/lat on the drawing map (Leaflet's own projection)."""
    box = page.locator("#draw-map").bounding_box()
    pt = page.evaluate("([lat, lon]) => { const p = window.gisportalReviewDraw.map.latLngToContainerPoint([lat, lon]);"
                       " return [p.x, p.y]; }", [lat, lon])
    return box["x"] + pt[0], box["y"] + pt[1]


def test_planner_draws_a_site_and_a_facility_and_gets_a_report(offline_page, portal):
    page = offline_page
    _login(page, "planner_demo", PLANNER_PASSWORD)
    page.locator("#mode-draw").check()
    page.locator("#draw-map.leaflet-container").wait_for(timeout=10_000)
    assert page.locator("#id_file").is_disabled() and page.locator("#id_text").is_disabled()
    # the districts are drawn for orientation, with no tiles (no basemap configured, network cut off)
    assert page.locator("#draw-map .leaflet-overlay-pane path").count() >= 10
    page.select_option("#draw-locate", label="桥东区")
    page.wait_for_timeout(1000)  # the district's zoom animation
    page.evaluate("window.gisportalReviewDraw.map.setView([40.8012, 114.8899], 17, {animate: false})")
    page.wait_for_timeout(300)
    assert page.evaluate("window.gisportalReviewDraw.map.getZoom()") == 17

    page.locator("#draw-site").click()
    for lon, lat in SITE:
        page.mouse.click(*_px(page, lon, lat))
        page.wait_for_timeout(150)
    page.mouse.click(*_px(page, *SITE[0]))  # back on the first vertex closes the polygon
    page.wait_for_timeout(200)
    assert page.locator("#draw-site-state").inner_text() == "用地：已绘制"

    page.locator("#draw-point").click()
    page.mouse.click(*_px(page, *FACILITY))
    row = page.locator("#draw-facilities li").first
    row.wait_for(timeout=5_000)
    row.locator(".fac-name").fill("社区综合服务站")
    row.locator(".fac-kind").select_option("community_service")
    row.locator(".fac-area").fill("150")
    page.fill("#id_site_name", "绘制·桥东花园")
    page.fill("#id_site_developer", "示例置业有限公司")
    page.fill("#id_site_households", "500")
    page.screenshot(path=str(portal[2] / "review-draw.png"))

    drawn = page.evaluate("JSON.parse(window.gisportalReviewDraw.collect())")
    roles = [f["properties"]["role"] for f in drawn["features"]]
    assert roles == ["site", "facility"]
    ring = drawn["features"][0]["geometry"]["coordinates"][0]
    assert len(ring) == 5 and all(abs(x - sx) < 2e-5 and abs(y - sy) < 2e-5 for (x, y), (sx, sy) in zip(ring, SITE))

    page.locator("#review-form button[value=check]").click()
    page.wait_for_load_state()
    assert page.locator("#verdict").get_attribute("data-verdict") in ("pass", "fail")
    assert page.locator("#review-checks tbody tr").count() == 10
    assert "绘制·桥东花园" in page.locator("main").inner_text()
    page.frame_locator("#review-map").locator(".leaflet-overlay-pane path").first.wait_for(timeout=30_000)
    page.screenshot(path=str(portal[2] / "review-draw-result.png"))
    assert page.blocked == [], f"requests left the machine: {page.blocked[:5]}"
    assert page.js_errors == []


def test_a_bad_drawing_comes_back_with_the_reason_and_the_drawing(offline_page, portal):
    """Keyboard path: vertices added at the map centre; households missing -> the server's reason."""
    page = offline_page
    _login(page, "planner_demo", PLANNER_PASSWORD)
    page.locator("#mode-draw").check()
    page.locator("#draw-map.leaflet-container").wait_for(timeout=10_000)
    m = "window.gisportalReviewDraw.map"
    page.locator("#draw-site").click()
    for lon, lat in SITE:
        page.evaluate(f"{m}.setView([{lat}, {lon}], 17, {{animate: false}})")
        page.locator("#draw-center").focus()
        page.keyboard.press("Enter")
    page.locator("#draw-finish").focus()
    page.keyboard.press("Enter")
    assert page.locator("#draw-site-state").inner_text() == "用地：已绘制"
    page.fill("#id_site_name", "缺户数")
    page.locator("#review-form button[value=check]").click()
    page.wait_for_load_state()
    err = page.locator("#review-error")
    assert err.get_attribute("data-code") == "households" and "户数" in err.inner_text()
    # the page restored the drawing
    assert page.locator("#mode-draw").is_checked()
    assert page.locator("#draw-site-state").inner_text() == "用地：已绘制"
    assert page.locator("#draw-map .leaflet-overlay-pane path").count() >= 1
    page.screenshot(path=str(portal[2] / "review-draw-refused.png"))
    assert page.blocked == [] and page.js_errors == []

"""The first page draws the demo layers in headless Chromium with the network cut off."""
import pytest

pytestmark = [pytest.mark.browser]


def _login(page, username, password, next_url="/"):
    page.goto(page.base + "/accounts/login/?next=" + next_url)
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.locator("main form button[type=submit]").click()
    page.wait_for_load_state()


def _overlay_count(frame):
    return frame.locator(".leaflet-overlay-pane path").count()


def test_home_map_draws_demo_layers_offline(offline_page, portal):
    page = offline_page
    page.goto(page.base + "/")
    assert "张家口" in page.title()
    counts = {row.get_attribute("data-kind"): row.locator("td.num").inner_text()
              for row in page.locator("table.counts tbody tr").all()}
    assert counts["grids"] == "—"  # grids name their workers: not public
    counts = {k: int(v) for k, v in counts.items() if v != "—"}
    assert counts["districts"] == 19 and counts["shelters"] > 100
    frame = page.frame_locator("#overview-map")
    # Leaflet loaded from our static files and drew vector layers (districts are shown by default).
    frame.locator(".leaflet-overlay-pane path").first.wait_for(timeout=30_000)
    assert _overlay_count(frame) >= 19 + counts["shelters"]
    labels = frame.locator(".leaflet-control-layers-overlays label").all_inner_texts()
    assert any("区县" in t for t in labels) and not any("网格" in t for t in labels)
    page.screenshot(path=str(portal[2] / "home.png"))
    assert page.blocked == [], f"requests left the machine: {page.blocked[:5]}"
    assert page.js_errors == []


def test_grid_layer_follows_permissions(offline_page):
    from .conftest import DEMO_PASSWORDS

    page = offline_page
    _login(page, "admin_demo", DEMO_PASSWORDS["admin"])
    grids = int(page.locator('table.counts tr[data-kind="grids"] td.num').inner_text())
    assert grids > 600
    frame = page.frame_locator("#overview-map")
    frame.locator(".leaflet-overlay-pane path").first.wait_for(timeout=30_000)
    before = _overlay_count(frame)
    # Switch on the grid layer: every grid is drawn.
    frame.locator(".leaflet-control-layers-overlays label", has_text="网格").locator("input").check()
    assert _overlay_count(frame) >= before + grids
    assert page.blocked == [] and page.js_errors == []


def test_field_worker_sees_only_own_grids(offline_page):
    from .conftest import DEMO_PASSWORDS

    page = offline_page
    _login(page, "field_demo", DEMO_PASSWORDS["field_staff"])
    grids = int(page.locator('table.counts tr[data-kind="grids"] td.num').inner_text())
    assert 0 < grids < 30  # the grids of one community


def test_english_switch(offline_page):
    page = offline_page
    page.goto(page.base + "/")
    page.select_option("#lang", "en")
    page.locator("form:has(#lang) button").click()
    page.wait_for_load_state()
    assert page.locator("html").get_attribute("lang") == "en"
    assert "Layers" in page.locator("aside h1").inner_text()


def test_popup_escapes_attribute_text(offline_page):
    """A district clicked on the map opens a popup whose text is shown, not executed."""
    page = offline_page
    page.goto(page.base + "/")
    frame = page.frame_locator("#overview-map")
    frame.locator(".leaflet-overlay-pane path").first.wait_for(timeout=30_000)
    frame.locator(".leaflet-overlay-pane path").first.click(force=True)
    popup = frame.locator(".leaflet-popup-content")
    popup.wait_for(timeout=10_000)
    assert "1307" in popup.inner_text()

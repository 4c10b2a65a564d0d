"""The first page draws the demo layers in headless Chromium with the network cut off."""
import pytest

pytestmark = [pytest.mark.browser]


def test_home_map_draws_demo_layers_offline(offline_page, portal):
    page = offline_page
    page.goto(page.base + "/")
    assert "张家口" in page.title()
    counts = {row.get_attribute("data-kind"): int(row.locator("td.num").inner_text())
              for row in page.locator("table.counts tbody tr").all()}
    assert counts["districts"] == 19 and counts["grids"] > 100
    frame = page.frame_locator("#overview-map")
    # Leaflet loaded from our static files and drew vector layers (districts are shown by default).
    frame.locator(".leaflet-overlay-pane path").first.wait_for(timeout=30_000)
    paths = frame.locator(".leaflet-overlay-pane path").count()
    assert paths >= 19 + counts["shelters"]
    labels = frame.locator(".leaflet-control-layers-overlays label").all_inner_texts()
    assert any("区县" in t for t in labels) and any("网格" in t for t in labels)
    # Switch on the grid layer: more shapes appear.
    frame.locator(".leaflet-control-layers-overlays label", has_text="网格").locator("input").check()
    assert frame.locator(".leaflet-overlay-pane path").count() >= paths + counts["grids"]
    page.screenshot(path=str(portal[2] / "home.png"))
    assert page.blocked == [], f"requests left the machine: {page.blocked[:5]}"
    assert page.js_errors == []


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

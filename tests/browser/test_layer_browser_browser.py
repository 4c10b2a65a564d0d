"""The layer browser in headless Chromium, network cut off (issue 8): a field worker finds one of their grids
by its code, presses Enter on the row, and the map zooms to it and highlights it."""
import pytest

from .conftest import DEMO_PASSWORDS
from .test_map_page import _login

pytestmark = [pytest.mark.browser]


def test_field_worker_searches_a_grid_and_highlights_it(offline_page, portal):
    page = offline_page
    _login(page, "field_demo", DEMO_PASSWORDS["field_staff"], next_url="/layers/")
    assert page.locator('a[data-kind="candidates"]').count() == 0  # not this role's layer
    page.locator('a[data-kind="grids"]').click()
    page.wait_for_load_state()
    assert page.url.endswith("/layers/grids/")
    # the map loads the worker's grids (only theirs) from the features endpoint
    page.locator("#lb-map[data-features]").wait_for(state="attached", timeout=30_000)
    rows = page.locator("tr.lb-row")
    mine = rows.count()
    assert 0 < mine <= 25 and int(page.locator("#lb-map").get_attribute("data-features")) == mine
    code = rows.nth(mine - 1).locator("td").nth(1).inner_text().strip()
    assert len(code) == 15

    page.fill("#lb-q", code)
    page.press("#lb-q", "Enter")  # the search form, by keyboard
    page.wait_for_load_state()
    assert rows.count() == 1 and rows.first.locator("td").nth(1).inner_text().strip() == code
    row_id = rows.first.get_attribute("data-id")

    rows.first.focus()
    page.keyboard.press("Enter")
    page.locator(f'#lb-map[data-highlight="{row_id}"]').wait_for(state="attached", timeout=30_000)
    highlight = page.locator(".leaflet-overlay-pane path.lb-highlight")
    highlight.first.wait_for(timeout=10_000)
    assert highlight.count() == 1
    assert rows.first.get_attribute("aria-selected") == "true"
    assert code in page.locator("#lb-status").inner_text() or "已定位" in page.locator("#lb-status").inner_text()
    # the map zoomed in to the grid: its outline fills a good part of the map
    box = highlight.first.bounding_box()
    map_box = page.locator("#lb-map").bounding_box()
    assert box["width"] > map_box["width"] * 0.2 or box["height"] > map_box["height"] * 0.2
    page.screenshot(path=str(portal[2] / "layer_browser.png"), full_page=True)
    # the export of the selection is offered (their grids only), and other roles' layers are refused
    assert page.locator('#lb-export a[data-format="csv"]').count() == 1
    assert page.goto(page.base + "/layers/candidates/").status == 403
    assert page.blocked == [] and page.js_errors == []

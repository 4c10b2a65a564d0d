"""The overview map: what anonymous users see, and the cut for very large layers."""
import json

import pytest

from gisportal import maps
from layers import models

pytestmark = pytest.mark.django_db


def _js(text: str) -> str:
    """``text`` as folium writes it inside the page's script (JSON, non-ASCII escaped)."""
    return json.dumps(text)[1:-1]


def test_anonymous_overview_has_public_layers_but_no_grids(client):
    html = client.get("/map/frame/").content.decode()
    assert _js("区县/管理区 (19)") in html
    assert _js("网格 (") not in html
    assert "worker_name" not in html  # grid workers are not public


def test_large_layer_is_cut_and_says_so(monkeypatch):
    monkeypatch.setattr(maps, "OVERVIEW_MAX_FEATURES", 10)
    html = maps.overview_map_html(None)
    total = models.Shelter.objects.count()
    assert _js(f"应急避难场所 (10 / {total})") in html
    assert _js("区县/管理区 (10 / 19)") in html

"""Every map asset is served from our own static files; popups show attribute text as text.

No database. Run: .venv/bin/python -m pytest -q -p no:django tests/gisportal/test_offline_assets.py
The widget test needs Django settings: it runs only when DJANGO_SETTINGS_MODULE is set.
"""
from __future__ import annotations

import html
import os
import re
import subprocess
import sys
import textwrap
from html.parser import HTMLParser
from pathlib import Path

import folium
import pytest
from folium.plugins import Draw, Fullscreen, MarkerCluster, MiniMap
from hypothesis import given, settings, strategies as st

from gisportal import mapping as gm

ROOT = Path(__file__).resolve().parents[2]
STATIC_DIR = ROOT / "gisportal" / "static"
VENDOR_DIR = STATIC_DIR / "vendor"

XSS_SCRIPT = "<script>alert(1)</script>"
XSS_IMG = '<img src=x onerror="alert(2)">'
XSS_TEMPLATE = "${alert(3)}`\\"


class _AssetLinks(HTMLParser):
    """Collect every <script src> and <link href> in a page."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script" and a.get("src") is not None:
            self.urls.append(a["src"])
        if tag == "link" and a.get("href") is not None:
            self.urls.append(a["href"])


def asset_links(page: str) -> list[str]:
    parser = _AssetLinks()
    parser.feed(page)
    return parser.urls


def _square(lon, lat, d, **props):
    ring = [[lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d], [lon, lat]]
    return {"type": "Feature", "properties": props, "geometry": {"type": "Polygon", "coordinates": [ring]}}


def build_demo_map(static_url="/static/") -> folium.Map:
    """GeoJSON layers, LayerControl, awesome markers, popups, Draw, MarkerCluster, Fullscreen."""
    m = gm.make_map(static_url=static_url, zoom_start=12, location=(40.78, 114.90))
    grids = folium.GeoJson(
        {"type": "FeatureCollection", "features": [
            _square(114.86, 40.76, 0.03, name=XSS_SCRIPT, pop=1234),
            _square(114.90, 40.77, 0.025, name=XSS_IMG, pop=56),
        ]},
        name="grids",
    ).add_to(m)
    gm.SafeGeoJsonPopup(fields=["name", "pop"], aliases=["名称", "人口"]).add_to(grids)
    gm.SafeGeoJsonTooltip(fields=["name"]).add_to(grids)
    folium.GeoJson(
        {"type": "FeatureCollection", "features": [_square(114.80, 40.70, 0.02, name="road")]}, name="roads"
    ).add_to(m)
    folium.Marker((40.79, 114.88), icon=folium.Icon(icon="home", prefix="fa", color="green"),
                  popup=gm.safe_popup(XSS_SCRIPT), tooltip=gm.safe_tooltip(XSS_IMG)).add_to(m)
    folium.Marker((40.80, 114.93), icon=folium.Icon(icon="info-sign", color="blue"),
                  popup=gm.popup_html("<b>{n}</b><br>{v}", n="shelter", v=XSS_TEMPLATE)).add_to(m)
    cluster = MarkerCluster(name="cluster").add_to(m)
    for i in range(5):
        folium.Marker((40.75 + 0.002 * i, 114.87), icon=folium.Icon(icon="user", prefix="fa")).add_to(cluster)
    Draw().add_to(m)
    Fullscreen().add_to(m)
    folium.LayerControl().add_to(m)
    return m


def test_rendered_page_loads_only_our_static_files():
    page = gm.render_map_html(build_demo_map())
    urls = asset_links(page)
    # Leaflet, jQuery, Bootstrap x2, awesome-markers x2, glyphicons, font-awesome, rotate,
    # markercluster x3, draw x2, fullscreen x2.
    assert len(urls) == 17, urls
    outside = [u for u in urls if not u.startswith("/static/") or "//" in u or ".." in u]
    assert outside == []
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", page)
    missing = [u for u in urls if not (STATIC_DIR / u[len("/static/"):]).is_file()]
    assert missing == []
    # Each vendored file appears once, in folium's order: Leaflet before its plugins.
    assert len(set(urls)) == len(urls)
    assert urls.index("/static/vendor/leaflet/leaflet.js") < urls.index(
        "/static/vendor/leaflet-draw/leaflet.draw.js")


def test_folium_class_defaults_are_not_mutated():
    before = (list(folium.Map.default_js), list(Draw.default_js), list(MarkerCluster.default_css))
    gm.render_map_html(build_demo_map())
    assert (list(folium.Map.default_js), list(Draw.default_js), list(MarkerCluster.default_css)) == before
    assert folium.Map.default_js[0][1].startswith("https://")  # a stock map still uses the CDN


def test_static_url_prefix_and_callable():
    urls = asset_links(gm.render_map_html(build_demo_map(static_url="/assets")))
    assert urls and all(u.startswith("/assets/vendor/") for u in urls)
    hashed = lambda path: "/s/" + re.sub(r"\.(js|css)$", r".abc123.\1", path)  # noqa: E731
    urls = asset_links(gm.render_map_html(build_demo_map(static_url=hashed)))
    assert "/s/vendor/leaflet/leaflet.abc123.js" in urls
    assert all(u.startswith("/s/vendor/") and ".abc123." in u for u in urls)


def test_attribute_text_is_escaped():
    page = gm.render_map_html(build_demo_map())
    for raw in (XSS_SCRIPT, XSS_IMG, "${alert(3)}", "alert(3)}`"):
        assert raw not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # safe_popup
    assert "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in page  # safe_tooltip
    assert "&#36;{alert(3)}&#96;&#92;" in page  # popup_html value: no template-literal specials
    # GeoJSON properties travel as JSON with '<' escaped, and the safe popup uses textContent.
    assert "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e" in page
    assert "textContent" in page and ".innerHTML" not in page.split("L.map(", 1)[1]


def test_escape_popup_examples():
    assert gm.escape_popup(XSS_SCRIPT) == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert gm.escape_popup("a & b 'c'") == "a &amp; b &#x27;c&#x27;"
    assert gm.escape_popup("${x}`\\") == "&#36;{x}&#96;&#92;"
    assert gm.escape_popup(None) == ""
    assert gm.escape_popup(12.5) == "12.5"


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_escape_popup_round_trips_and_leaves_no_specials(text):
    out = gm.escape_popup(text)
    assert not set(out) & set("<>\"'`$\\")
    assert html.unescape(out) == text


def test_strict_mode_refuses_raw_popups_and_unescaped_geojson():
    m = gm.make_map()
    folium.Marker((40.77, 114.89), popup=XSS_IMG).add_to(m)
    with pytest.raises(gm.UnsafeContentError):
        gm.render_map_html(m)
    assert XSS_IMG in gm.render_map_html(m, strict=False)  # the hole strict mode guards against

    m = gm.make_map()
    folium.Marker((40.77, 114.89), tooltip="plain").add_to(m)
    with pytest.raises(gm.UnsafeContentError):
        gm.render_map_html(m)

    data = {"type": "FeatureCollection", "features": [_square(114.8, 40.7, 0.01, name=XSS_SCRIPT)]}
    m = gm.make_map()
    folium.GeoJson(data, popup=folium.GeoJsonPopup(fields=["name"])).add_to(m)
    with pytest.raises(gm.UnsafeContentError, match="innerHTML"):
        gm.render_map_html(m)

    # Stock GeoJsonPopup over already-escaped properties is accepted.
    escaped = {"type": "FeatureCollection",
               "features": [_square(114.8, 40.7, 0.01, name=html.escape(XSS_SCRIPT))]}
    m = gm.make_map()
    folium.GeoJson(escaped, popup=folium.GeoJsonPopup(fields=["name"])).add_to(m)
    assert "L.map(" in gm.render_map_html(m)


def test_unvendored_plugin_is_refused():
    m = gm.make_map()
    MiniMap().add_to(m)
    with pytest.raises(gm.OfflineAssetError, match="MiniMap"):
        gm.render_map_html(m)
    with pytest.raises(gm.OfflineAssetError):
        gm.local_plugin_assets(MiniMap())


def test_plugin_added_without_helper_is_localized():
    m = gm.make_map()
    Draw().add_to(m)  # not passed through local_plugin_assets: localize_assets finds it
    assert "/static/vendor/leaflet-draw/leaflet.draw.js" in gm.asset_urls(m)
    assert gm.local_plugin_assets(MarkerCluster(), "/x/").default_js == [
        ("markerclusterjs", "/x/vendor/leaflet-markercluster/leaflet.markercluster.js")]


def test_no_basemap_means_no_tiles_and_map_max_zoom():
    m = gm.make_map()
    page = gm.render_map_html(m)
    assert not any(isinstance(e, folium.TileLayer) for e in gm._walk(m))
    assert "L.tileLayer" not in page
    assert '"maxZoom": 18' in page  # MarkerCluster needs a map maxZoom when there are no tiles


def test_basemaps():
    assert gm.basemap_tiles(None) == []
    osm = gm.basemap_tiles({"kind": "osm"})
    assert [t.url for t in osm] == [gm.OSM_URL]
    tdt = gm.basemap_tiles({"kind": "tianditu", "key": "a b&c"})
    assert [t.overlay for t in tdt] == [False, True]
    assert "/vec_w/wmts?" in tdt[0].url and "LAYER=vec&" in tdt[0].url
    assert "/cva_w/wmts?" in tdt[1].url and "LAYER=cva&" in tdt[1].url
    assert all(t.url.endswith("&tk=a%20b%26c") and t.subdomains == "01234567" for t in tdt)
    local = gm.basemap_tiles({"kind": "local", "url": "/tiles/{z}/{x}/{y}.png", "max_zoom": 16})
    assert local[0].url == "/tiles/{z}/{x}/{y}.png" and local[0].max_zoom == 16
    for bad in ({"kind": "tianditu"}, {"kind": "local"}, {"kind": "local", "url": "/t/{z}.png"},
                {"kind": "google"}, {}):
        with pytest.raises(ValueError):
            gm.basemap_tiles(bad)

    m = gm.make_map(basemap={"kind": "tianditu", "key": "KEY"})
    page = gm.render_map_html(m)
    assert page.count("L.tileLayer") == 2 and "tk=KEY" in page
    assert all(u.startswith("/static/") for u in asset_links(page))
    with pytest.raises(TypeError):
        gm.make_map(tiles="OpenStreetMap")


def test_map_parts_for_embedding():
    parts = gm.map_parts(build_demo_map())
    assert "/static/vendor/leaflet/leaflet.js" in parts.header
    assert re.search(r'<div class="folium-map" id="map_\w+"', parts.html)
    assert "L.map(" in parts.script and "<script" not in parts.script
    assert asset_links(parts.html) == []
    assert asset_links(parts.header) == asset_links(gm.render_map_html(build_demo_map()))


# ------------------------------------------------------------------ the vendored files themselves

def _vendored(suffix):
    return sorted(VENDOR_DIR.rglob(f"*{suffix}"))


def test_vendored_css_references_resolve():
    refs = 0
    for css in _vendored(".css"):
        for ref in re.findall(r"url\(\s*['\"]?([^'\")]+)['\"]?\s*\)", css.read_text(encoding="utf-8")):
            if ref.startswith(("data:", "#")):
                continue
            assert not re.match(r"(https?:)?//", ref), f"{css}: remote {ref}"
            target = (css.parent / ref.split("?")[0].split("#")[0]).resolve()
            assert target.is_file() and VENDOR_DIR in target.parents, f"{css}: missing {ref}"
            refs += 1
    assert refs >= 20


def test_vendored_tree_is_small_licensed_and_listed():
    files = [p for p in VENDOR_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 5_000_000
    assert not [p for p in files if p.suffix == ".map" or "node_modules" in p.parts]
    assert not [p for p in _vendored(".js") + _vendored(".css") if b"sourceMappingURL=" in p.read_bytes()]
    versions = (VENDOR_DIR / "VERSIONS.md").read_text(encoding="utf-8")
    for folder in (p for p in VENDOR_DIR.iterdir() if p.is_dir()):
        assert (folder / "LICENSE").is_file(), folder
        assert f"| {folder.name}/ |" in versions, folder
    assert (VENDOR_DIR / "ol" / "ol.js").is_file() and (VENDOR_DIR / "ol" / "ol.css").is_file()


def test_manifest_collectstatic_accepts_vendor_tree(tmp_path):
    """Hashed storage rewrites every url() in the CSS and fails on any it cannot find."""
    code = textwrap.dedent(f"""
        import django
        from django.conf import settings
        settings.configure(
            INSTALLED_APPS=["django.contrib.staticfiles"], STATIC_URL="/static/",
            STATIC_ROOT={str(tmp_path / 'root')!r},
            STATICFILES_DIRS=[("vendor", {str(VENDOR_DIR)!r})],
            STORAGES={{"staticfiles": {{"BACKEND":
                "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"}}}},
        )
        django.setup()
        from django.core.management import call_command
        call_command("collectstatic", interactive=False, verbosity=0)
        from django.templatetags.static import static
        print(static("vendor/leaflet/leaflet.js"))
    """)
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert re.fullmatch(r"/static/vendor/leaflet/leaflet\.[0-9a-f]{12}\.js\n", out.stdout)


# ------------------------------------------------------------------ admin widget (needs settings)

def test_offline_openlayers_widget():
    if not os.environ.get("DJANGO_SETTINGS_MODULE"):
        pytest.skip("DJANGO_SETTINGS_MODULE is not set: the widget needs Django settings")
    import django

    django.setup()
    from django.conf import settings as dj_settings
    from django.contrib.gis.geos import GEOSGeometry

    from gisportal.widgets import OfflineGISModelAdmin, OfflineOpenLayersWidget

    assert OfflineGISModelAdmin.gis_widget is OfflineOpenLayersWidget
    static_url = dj_settings.STATIC_URL
    widget = OfflineOpenLayersWidget(attrs={"geom_type": "POLYGON", "basemap": None})
    media = str(widget.media)
    urls = asset_links(media)
    assert f"{static_url}vendor/ol/ol.js" in urls and f"{static_url}vendor/ol/ol.css" in urls
    assert all(u.startswith(static_url) for u in urls) and "//" not in media.replace("://", "")
    for u in urls:
        if "/vendor/" in u:
            assert (STATIC_DIR / u[len(static_url):]).is_file()

    geom = GEOSGeometry("SRID=4326;POLYGON((114.85 40.75,114.95 40.75,114.95 40.8,114.85 40.8,114.85 40.75))")
    out = widget.render("geom", geom, attrs={"id": "id_geom"})
    assert "new MapWidget(options)" in out and "ol.layer.Graticule" in out
    assert "https://" not in out and "ol.source.OSM" not in out
    assert "options['default_lon'] = 114.89" in out

    # The setting may be a kind name; "none" means no tiles.
    assert OfflineOpenLayersWidget(attrs={"basemap": "none"}).get_basemap() is None
    assert OfflineOpenLayersWidget(attrs={"basemap": "osm"}).get_basemap() == {"kind": "osm"}
    assert OfflineOpenLayersWidget().render("geom", None, attrs={"id": "id_g0"})  # with the real setting

    tdt = OfflineOpenLayersWidget(attrs={"basemap": {"kind": "tianditu", "key": "k'</script>"}})
    out = tdt.render("geom", None, attrs={"id": "id_geom"})
    assert "</script>" not in out.split("<script>", 1)[1].rsplit("</script>", 1)[0]
    assert "tianditu.gov.cn" in out

"""Hostile input (issue 9, 2 and 3).

Canary: a loopback TCP listener and a sentinel file; every URL-like and path-like payload goes through every
entry we can reach (import service and page, review service, command and page, layer GeoJSON bbox, API
filters when /api/v1/ is mounted, coverage/siting forms, admin search). Afterwards: zero connections
accepted, the sentinel neither read (atime, checked by a positive control first) nor changed.

XSS: attribute values with ``<script>``, ``<img onerror>``, backticks and ``</script>`` are stored verbatim and
come out escaped in the overview map, the layer GeoJSON, the KML and CSV exports, and the review page.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import shapely
from django.contrib.gis.geos import GEOSGeometry
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.urls import NoReverseMatch, reverse
from pyproj import Transformer
from shapely.geometry import MultiPolygon, Point, box

from importers import services as import_services
from layers import models, services_review

from .conftest import count

pytestmark = pytest.mark.django_db

_TR = Transformer.from_crs(4326, 4547, always_xy=True)
L, B, S = 115.05, 40.60, 0.02


def g4547(geom, multi=True):
    geom = shapely.transform(geom, lambda c: np.column_stack(_TR.transform(c[:, 0], c[:, 1])))
    if multi and geom.geom_type == "Polygon":
        geom = MultiPolygon([geom])
    return GEOSGeometry(memoryview(shapely.to_wkb(geom)), srid=4547)


@pytest.fixture
def city(db):
    d = models.District.objects.create(code="999001", name="测试区", geom=g4547(box(L, B, L + S, B + S)))
    st = models.Street.objects.create(code="999001001", name="测试街道", district=d, geom=g4547(box(L, B, L + S, B + S)))
    c = models.Community.objects.create(code="999001001001", name="测试社区", street=st,
                                        geom=g4547(box(L, B, L + S, B + S)))
    return {"district": d, "street": st, "community": c}


# ------------------------------------------------------------------ the canary
class Canary:
    def __init__(self, tmp: Path):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections: list = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        self.sentinel = tmp / "sentinel.txt"
        self.sentinel.write_text("SENTINEL " + os.urandom(8).hex(), encoding="utf-8")
        self.digest = hashlib.sha256(self.sentinel.read_bytes()).hexdigest()
        st = self.sentinel.stat()
        # positive control: does reading this file move its atime here (relatime: when atime <= mtime)?
        os.utime(self.sentinel, ns=(st.st_mtime_ns - 10**10, st.st_mtime_ns))
        self.sentinel.read_bytes()
        self.atime_works = self.sentinel.stat().st_atime_ns > st.st_mtime_ns - 10**10
        os.utime(self.sentinel, ns=(st.st_mtime_ns - 10**10, st.st_mtime_ns))
        self.stat0 = self.sentinel.stat()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, addr = self.sock.accept()
            except OSError:
                continue
            self.connections.append(addr)
            conn.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/x"

    def strings(self) -> list[str]:
        s = str(self.sentinel)
        return [self.url, f"https://127.0.0.1:{self.port}/x", f"/vsicurl/{self.url}", f"/vsicurl_streaming/{self.url}",
                f"file://{s}", s, f"/vsizip/{s}", "/etc/passwd", "../../../../etc/passwd", f"//127.0.0.1:{self.port}/x",
                f"GDAL:{s}", f"<OGRVRTDataSource><OGRVRTLayer name='x'><SrcDataSource>{s}</SrcDataSource>"
                f"</OGRVRTLayer></OGRVRTDataSource>"]

    def files(self) -> list[tuple[str, bytes]]:
        """(upload name, content) pairs that try to make a parser fetch or open something."""
        s, u = str(self.sentinel), self.url
        pt = {"type": "Feature", "properties": {"code": "999FX01", "name": u},
              "geometry": {"type": "Point", "coordinates": [L + 0.005, B + 0.005]}}
        vrt = (f"<OGRVRTDataSource><OGRVRTLayer name='x'><SrcDataSource>{s}</SrcDataSource>"
               f"</OGRVRTLayer></OGRVRTDataSource>").encode()
        out = [
            ("crs_link.geojson", json.dumps({"type": "FeatureCollection", "features": [pt],
                                             "crs": {"type": "link", "properties": {"href": u, "type": "proj4"}}})),
            ("crs_name_url.geojson", json.dumps({"type": "FeatureCollection", "features": [pt],
                                                 "crs": {"type": "name", "properties": {"name": u}}})),
            ("crs_name_file.geojson", json.dumps({"type": "FeatureCollection", "features": [pt],
                                                  "crs": {"type": "name", "properties": {"name": s}}})),
            ("vrt.geojson", vrt), ("vrt.vrt", vrt), ("vrt.json", b"  " + vrt),
            ("url.geojson", u.encode()), ("vsicurl.geojson", f"/vsicurl/{u}".encode()),
            ("path.csv", f"code,name,wkt\n999FX02,x,{s}\n999FX03,y,{u}\n".encode()),
            ("kml_link.kml", (f'<?xml version="1.0"?><kml xmlns="http://www.opengis.net/kml/2.2"><Document>'
                              f"<NetworkLink><Link><href>{u}</href></Link></NetworkLink>"
                              f"<Placemark><name>a</name><Point><coordinates>{L},{B}</coordinates></Point></Placemark>"
                              f"</Document></kml>").encode()),
            ("xxe.kml", (f'<?xml version="1.0"?><!DOCTYPE kml [<!ENTITY e SYSTEM "file://{s}">'
                         f'<!ENTITY n SYSTEM "{u}">]><kml><Document><Placemark><name>&e;&n;</name>'
                         f"<Point><coordinates>{L},{B}</coordinates></Point></Placemark></Document></kml>").encode()),
            ("shp_url.shp", u.encode()),
        ]
        return [(n, c.encode() if isinstance(c, str) else c) for n, c in out]

    def close(self) -> dict:
        time.sleep(0.3)   # let a late connection land
        self._stop.set()
        self.thread.join(2)
        self.sock.close()
        st = self.sentinel.stat()
        return {"connections": len(self.connections),
                "changed": hashlib.sha256(self.sentinel.read_bytes()).hexdigest() != self.digest
                or st.st_mtime_ns != self.stat0.st_mtime_ns,
                "read": self.atime_works and st.st_atime_ns != self.stat0.st_atime_ns}


@pytest.fixture
def canary(tmp_path):
    c = Canary(tmp_path)
    yield c
    c._stop.set()


def _refused(status: int) -> bool:
    return status >= 400


def _form_refused(r) -> bool:
    """A 4xx, or the page re-shown with its form's errors (the analysis pages answer 200 with errors)."""
    form = r.context.get("form") if r.context is not None else None
    return r.status_code >= 400 or bool(form is not None and form.errors)


def test_canary_every_entry(canary, city, admin_client, tmp_path, settings):
    cases = refused = 0
    accepted: list[str] = []   # handled without refusal (harmless: an option the format ignores, say)
    where = ""

    def case(ok_refused: bool):
        nonlocal cases, refused
        cases += 1
        refused += bool(ok_refused)
        if not ok_refused:
            accepted.append(where)

    # 1. the import service: hostile files, and hostile strings in every option
    for name, content in canary.files():
        p = tmp_path / ("upload" + Path(name).suffix)
        p.write_bytes(content)
        where = f"import_file {name}"
        r = import_services.import_file("facilities", p, file_name=name, dry_run=True)
        case(not r.ok)
    good = tmp_path / "good.geojson"
    good.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"code": "999FX09", "name": "n"},
         "geometry": {"type": "Point", "coordinates": [L + 0.005, B + 0.005]}}]}), encoding="utf-8")
    for s in canary.strings():
        for kw in ({"srid": s}, {"encoding": s}, {"layer": s}, {"mapping": [f"name={s}"]}):
            where = f"import_file option {next(iter(kw))}"
            r = import_services.import_file("facilities", good, dry_run=True, **kw)
            case(not r.ok)
    # 2. the import page: hostile files under hostile names, hostile form fields
    url = reverse("import")
    for name, content in canary.files():
        for upload_name in (name, f"../../{name}", f"/vsicurl/{canary.url}/{name}"):
            where = f"import page {name}"
            r = admin_client.post(url, {"file": SimpleUploadedFile(upload_name, content), "kind": "facilities",
                                        "mode": "append", "dry_run": "on"})
            case(_refused(r.status_code))
    for s in canary.strings():
        where = "import page options"
        r = admin_client.post(url, {"file": SimpleUploadedFile("good.geojson", good.read_bytes()), "kind": "facilities",
                                    "mode": "append", "dry_run": "on", "srid": s[:16], "encoding": s[:32],
                                    "layer": s[:128], "mapping": f"name={s}"})
        case(_refused(r.status_code))
    # 3. review: the service, the command and the page
    for name, content in canary.files():
        where = f"review {name}"
        try:
            services_review.review_submission(services_review.parse_submission(content))
            case(False)
        except services_review.SubmissionError:
            case(True)
        p = tmp_path / ("sub" + Path(name).suffix)
        p.write_bytes(content)
        try:
            call_command("review_project", str(p), stdout=open(os.devnull, "w"), stderr=open(os.devnull, "w"))
            case(False)
        except (SystemExit, Exception):   # the command refuses with exit status 2 (or a CommandError)
            case(True)
        r = admin_client.post(reverse("review"), {"file": SimpleUploadedFile(name, content), "action": "check"})
        case(_refused(r.status_code))
        r = admin_client.post(reverse("review"), {"text": content.decode("utf-8", "replace"), "action": "check"})
        case(_refused(r.status_code))
    # 4. layer GeoJSON bbox, coverage/siting forms, admin search, API filters
    for s in canary.strings():
        where = "layer GeoJSON bbox"
        r = admin_client.get(reverse("layer_geojson", kwargs={"kind": "facilities"}), {"bbox": s})
        case(_refused(r.status_code))
        where = "coverage form (all fields)"
        r = admin_client.post(reverse("coverage"), {"kind": s, "radius_m": s, "method": s, "demand": s})
        case(_form_refused(r))
        where = "coverage form (radius, level)"
        r = admin_client.post(reverse("coverage"), {"kind": "shelters", "radius_m": s, "method": "euclidean",
                                                    "demand": "grids", "level": s})
        case(_form_refused(r))
        try:
            where = "siting form"
            r = admin_client.post(reverse("siting"), {"kind": s, "count": s, "radius_m": s})
            case(_form_refused(r))
        except NoReverseMatch:
            pass
        for model in ("grid", "servicefacility", "district", "housingproject"):
            r = admin_client.get(reverse(f"admin:layers_{model}_changelist"), {"q": s})
            assert r.status_code == 200   # a search for the text: harmless, not a refusal
            where = "admin search (text search, harmless)"
            case(False)
        try:
            api = reverse("api-layer", kwargs={"kind": "facilities"})
        except NoReverseMatch:
            api = None
        if api:
            for param in ("bbox", "ordering", "search", "code", "srid", "format"):
                where = f"API ?{param}=" + (" (text filter, harmless)" if param in ("code", "search") else "")
                r = admin_client.get(api, {param: s})
                assert r.status_code < 500, (param, s, r.status_code)
                case(_refused(r.status_code))
    result = canary.close()
    count("canary_cases", cases)
    count("canary_refused", refused)
    from collections import Counter
    for label, n in sorted(Counter(accepted).items()):
        count("canary_accepted", n, f"{label}: {n}")
    count("canary_connections", result["connections"])
    count("sentinel_touched", int(result["changed"] or result["read"]))
    count("bad_input_refused", refused)
    assert result["connections"] == 0, canary.connections
    assert not result["changed"]
    assert not result["read"], "the sentinel file was read"
    assert [a for a in accepted if "harmless" not in a] == []   # everything else was refused
    assert cases > 300, cases


def test_canary_positive_control(canary):
    """The canary can fail: a real fetch and a real read are seen."""
    import urllib.request

    try:
        urllib.request.urlopen(canary.url, timeout=1)
    except Exception:
        pass
    canary.sentinel.read_bytes()
    result = canary.close()
    assert result["connections"] == 1
    if canary.atime_works:
        assert result["read"]


# ------------------------------------------------------------------ XSS and formula injection
XSS = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "`${alert(1)}`</script>"]
FORMULAS = ["=HYPERLINK(\"http://x\")", "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(1)"]


@pytest.fixture
def hostile_rows(city, admin_user):
    c = city["community"]
    for i, text in enumerate(XSS):
        x0 = L + i * 0.005
        models.Grid.objects.create(code=f"99900100100100{i}", community=c, worker_name=text,
                                   geom=g4547(box(x0, B, x0 + 0.005, B + 0.005)))
        models.ServiceFacility.objects.create(code=f"999FXSS{i}", name=text, community=c,
                                              geom=g4547(Point(x0 + 0.001, B + 0.01), multi=False))
    for i, text in enumerate(FORMULAS):
        models.ServiceFacility.objects.create(code=f"999FCSV{i}", name=text, community=c,
                                              geom=g4547(Point(L + 0.001 * i, B + 0.015), multi=False))
    p = models.HousingProject.objects.create(name=XSS[0] + XSS[1], developer=XSS[2], households=10,
                                             submitted_by=admin_user, geom=g4547(box(L, B, L + 0.002, B + 0.002)))
    return p


def _no_raw(text: str) -> list[str]:
    """The payloads' active forms found in ``text`` (escaped text such as ``&lt;img …`` is fine)."""
    return [x for x in XSS if x in text] + [t for t in ("<script>alert", "<img src=x", "`</script>") if t in text]


def test_xss_is_escaped_everywhere(hostile_rows, client, admin_client, tmp_path, security_middleware):
    # stored verbatim
    assert sorted(models.Grid.objects.filter(code__startswith="999").values_list("worker_name", flat=True)) \
        == sorted(XSS)
    sinks = 0
    # the overview map (folium, inline script): the values travel as JSON string data with "<" written
    # \u003c, so no tag and no "</script>" can close folium's script block; the popups (SafeGeoJsonPopup)
    # set them as text. A backtick inside a double-quoted JSON string is an ordinary character.
    html = admin_client.get(reverse("map_frame")).content.decode()   # admins see every layer
    assert "999FXSS0" in html                                  # our rows are on the map
    assert [t for t in ("<script>alert", "<img src=x", "</script>\"") if t in html] == []
    assert "\\u003cimg src=x onerror=alert(1)\\u003e" in html
    sinks += 1
    # the home page and the review page
    for c, url in ((client, reverse("home")), (admin_client, reverse("review_project", kwargs={"pk": hostile_rows.pk})),
                   (admin_client, reverse("review"))):
        body = c.get(url).content.decode()
        assert _no_raw(body) == [], url
        sinks += 1
    body = admin_client.get(reverse("review_project", kwargs={"pk": hostile_rows.pk})).content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body   # escaped, not dropped
    # the layer GeoJSON: JSON data served as JSON (not HTML), values round-trip exactly
    r = admin_client.get(reverse("layer_geojson", kwargs={"kind": "grids"}))
    assert r["Content-Type"].startswith("application/json") and r["X-Content-Type-Options"] == "nosniff"
    vals = {f["properties"]["worker_name"] for f in r.json()["features"]}
    assert set(XSS) <= vals
    sinks += 1
    # KML export: well-formed XML, values as text, nothing raw
    from importers import exports
    kml = tmp_path / "g.kml"
    exports.export_layer("facilities", "kml", kml)
    raw = kml.read_text(encoding="utf-8")
    assert _no_raw(raw) == [] and "CDATA" not in raw
    texts = {e.text for e in ET.parse(kml).iter() if e.text}
    assert all(any(x in t for t in texts) for x in XSS)
    sinks += 1
    # CSV export: formula triggers neutralised, HTML kept as text (a CSV is not rendered as HTML)
    csv_path = tmp_path / "f.csv"
    exports.export_layer("facilities", "csv", csv_path)
    text = csv_path.read_text(encoding="utf-8-sig")
    import csv as csvmod
    names = [row["name"] for row in csvmod.DictReader(text.splitlines())]
    for f in FORMULAS:
        assert "'" + f in names and f not in names
    sinks += 1
    count("xss_sinks_checked", sinks)
    count("xss_payloads", len(XSS) + len(FORMULAS))

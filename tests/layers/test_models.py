"""Model validation: code formats, parents, containment, non-negative numbers, derived capacity."""
import pytest
from django.contrib.gis.geos import MultiPolygon, Point, Polygon
from django.core.exceptions import ValidationError
from django.test import override_settings
from django.utils import translation

from layers import models

pytestmark = pytest.mark.django_db
SRID = 4547
X0, Y0 = 500_000.0, 4_500_000.0  # inside EPSG:4547's valid area


def square(x, y, size, srid=SRID):
    return MultiPolygon(Polygon.from_bbox((x, y, x + size, y + size)), srid=srid)


@pytest.fixture
def hierarchy():
    d = models.District.objects.create(code="999901", name="测试区", geom=square(X0, Y0, 10_000))
    s = models.Street.objects.create(code="999901001", name="测试街道", district=d, geom=square(X0, Y0, 5_000))
    c = models.Community.objects.create(code="999901001001", name="测试社区", street=s,
                                        geom=square(X0, Y0, 1_000))
    return d, s, c


@pytest.mark.parametrize("code", ["12345", "1234567", "13070A", ""])
def test_district_code_must_be_six_digits(code):
    d = models.District(code=code, name="x", geom=square(X0, Y0, 10))
    with pytest.raises(ValidationError) as err:
        d.full_clean()
    assert "code" in err.value.message_dict


def test_valid_hierarchy_passes(hierarchy):
    d, s, c = hierarchy
    g = models.Grid(code="999901001001001", community=c, geom=square(X0, Y0, 500))
    for obj in (d, s, c, g):
        obj.full_clean()


def test_grid_code_pattern_and_prefix(hierarchy):
    _, _, c = hierarchy
    with pytest.raises(ValidationError) as err:
        models.Grid(code="99990100100101", community=c, geom=square(X0, Y0, 10)).full_clean()
    assert "code" in err.value.message_dict
    with pytest.raises(ValidationError) as err:  # 15 digits, but not under its community
        models.Grid(code="999901001002001", community=c, geom=square(X0, Y0, 10)).full_clean()
    assert "code" in err.value.message_dict


def test_grid_must_lie_inside_its_community(hierarchy):
    _, _, c = hierarchy
    # 0.4 m over the edge is digitising noise; 2 m over is an error naming the area outside.
    models.Grid(code="999901001001001", community=c, geom=square(X0 + 500.4, Y0, 500)).full_clean()
    with pytest.raises(ValidationError) as err:
        models.Grid(code="999901001001001", community=c, geom=square(X0 + 502, Y0, 500)).full_clean()
    assert "750" in str(err.value.message_dict["geom"])  # (2 - 0.5 tolerance) m × 500 m outside


def test_messages_in_chinese_and_english(hierarchy):
    _, _, c = hierarchy
    grid = models.Grid(code="999901001001001", community=c, geom=square(X0 + 600, Y0, 500))
    with translation.override("zh-hans"), pytest.raises(ValidationError) as zh:
        grid.full_clean()
    with translation.override("en"), pytest.raises(ValidationError) as en:
        grid.full_clean()
    assert "网格超出所属社区范围" in str(zh.value)
    assert "outside its community" in str(en.value)


def test_negative_numbers_refused(hierarchy):
    with pytest.raises(ValidationError) as err:
        models.Shelter(code="T1", name="t", effective_area_m2=-5, geom=square(X0, Y0, 100)).full_clean()
    assert "effective_area_m2" in err.value.message_dict
    with pytest.raises(ValidationError):
        models.ServiceFacility(code="T2", name="t", floor_area_m2=-1, geom=Point(X0, Y0, srid=SRID)).full_clean()


def test_effective_area_cannot_exceed_site():
    with pytest.raises(ValidationError) as err:
        models.Shelter(code="T3", name="t", effective_area_m2=10_050, geom=square(X0, Y0, 100)).full_clean()
    assert "effective_area_m2" in err.value.message_dict


def test_on_duty_not_above_staff():
    with pytest.raises(ValidationError):
        models.FireStation(code="T4", name="t", staff=3, on_duty=4, geom=Point(X0, Y0, srid=SRID)).full_clean()


def test_shelter_capacity_derived_from_level_and_overridable():
    s = models.Shelter(code="T5", name="t", level="emergency", effective_area_m2=5000, geom=square(X0, Y0, 100))
    assert s.capacity == 5000  # 1 m² per person (GB 50413-2007)
    s.level = "fixed_short"
    assert s.capacity == 2500  # 2 m² per person
    with override_settings(GISPORTAL_RULES={"shelter_per_capita_m2": {"fixed_short": 1.5}}):
        assert s.capacity == 3333
    s.capacity_persons = 1234
    assert s.capacity == 1234


def test_project_population_from_households():
    p = models.HousingProject(name="p", developer="d", households=100, geom=square(X0, Y0, 100))
    assert p.population == 262  # 2.62 persons per household (2020 census)
    p.population_declared = 300
    assert p.population == 300


def test_geometry_stored_in_gis_srid_and_distance_in_metres(hierarchy):
    _, _, c = hierarchy
    pt = Point(X0 + 3, Y0 + 4, srid=SRID)
    models.FireStation.objects.create(code="T6", name="t", geom=pt, community=c)
    near = models.FireStation.objects.near(Point(X0, Y0, srid=SRID), 5.0).filter(code="T6")
    far = models.FireStation.objects.near(Point(X0, Y0, srid=SRID), 4.99).filter(code="T6")
    assert near.count() == 1 and far.count() == 0  # a 3-4-5 triangle
    lonlat = Point(114.0, 40.6, srid=4326)  # the central meridian: x = 500 000
    models.FireStation.objects.create(code="T7", name="t", geom=lonlat)
    stored = models.FireStation.objects.get(code="T7").geom
    assert stored.srid == SRID and abs(stored.x - 500_000) < 0.01

"""The spatial schema (DESIGN.md, Domain). Every geometry field is ``geom`` in ``settings.GIS_SRID``.

District > Street > Community > Grid, the facilities that art. 12 and art. 16 of the regulation ask for,
housing projects, roads, candidate sites and registered population rasters. Messages are written in Chinese
(the product's first language) and translated to English in ``gisportal/locale/en``.
"""
from __future__ import annotations

from django.conf import settings
from django.contrib.gis.db import models
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.utils.translation import gettext_lazy as _

from .querysets import SpatialQuerySet

SRID = settings.GIS_SRID

district_code_validator = RegexValidator(r"^\d{6}$", _("区县代码应为 6 位数字（GB/T 2260）"))
street_code_validator = RegexValidator(r"^\d{9}$", _("街道代码应为 9 位数字（6 位区县 + 3 位街道）"))
community_code_validator = RegexValidator(r"^\d{12}$", _("社区代码应为 12 位数字（9 位街道 + 3 位社区）"))
grid_code_validator = RegexValidator(r"^\d{15}$", _("网格代码应为 15 位数字（6+3+3+3）"))
non_negative = MinValueValidator(0, _("不能为负数"))


def positive(value) -> None:
    """A number strictly above 0 (a distance, a radius)."""
    if value is not None and not value > 0:
        raise ValidationError(_("应大于 0"), code="min_value")


def service_radius_field():
    """A facility's own service distance: overrides the rule set's for its kind/level in coverage runs."""
    return models.FloatField(_("服务半径（米，留空按规则）"), null=True, blank=True, validators=[positive],
                             help_text=_("只在本设施与规则不同时填写；覆盖分析的 --radius-m 仍优先"))

# Tolerance for "lies inside its parent": boundaries digitised separately differ by centimetres.
CONTAINMENT_TOLERANCE_M = 0.5


class SampleMixin(models.Model):
    is_sample = models.BooleanField(_("示例数据"), default=False,
                                    help_text=_("生成的演示数据，不是官方数据"))

    class Meta:
        abstract = True


def _check_prefix(child_code: str, parent_code: str | None, field: str, parent_label: str) -> None:
    if child_code and parent_code and not child_code.startswith(parent_code):
        raise ValidationError({field: _("代码 %(code)s 与上级%(parent)s代码 %(pcode)s 不一致") % {
            "code": child_code, "parent": parent_label, "pcode": parent_code}})


def _check_inside(geom, parent_geom, field: str, message) -> None:
    if geom is None or parent_geom is None:
        return
    if geom.srid != parent_geom.srid:
        geom = geom.transform(parent_geom.srid, clone=True)
    outside = geom.difference(parent_geom.buffer(CONTAINMENT_TOLERANCE_M))
    if not outside.empty and outside.area > 1.0:
        raise ValidationError({field: message % {"area": round(outside.area, 1)}})


class District(SampleMixin):
    class Kind(models.TextChoices):
        DISTRICT = "district", _("市辖区")
        COUNTY = "county", _("县")
        MANAGEMENT_AREA = "management_area", _("管理区")
        DEVELOPMENT_ZONE = "development_zone", _("开发区")

    code = models.CharField(_("代码"), max_length=6, unique=True, validators=[district_code_validator])
    name = models.CharField(_("名称"), max_length=64)
    kind = models.CharField(_("类型"), max_length=20, choices=Kind.choices, default=Kind.DISTRICT)
    approximate = models.BooleanField(_("近似边界"), default=False)
    source = models.CharField(_("数据来源"), max_length=200, blank=True)
    geom = models.MultiPolygonField(_("范围"), srid=SRID)

    objects = SpatialQuerySet.as_manager()

    class Meta:
        ordering = ["code"]
        verbose_name = _("区县/管理区")
        verbose_name_plural = _("区县/管理区")

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"


class Street(SampleMixin):
    code = models.CharField(_("代码"), max_length=9, unique=True, validators=[street_code_validator])
    name = models.CharField(_("名称"), max_length=64)
    district = models.ForeignKey(District, models.PROTECT, related_name="streets", verbose_name=_("区县"))
    geom = models.MultiPolygonField(_("范围"), srid=SRID)

    objects = SpatialQuerySet.as_manager()

    class Meta:
        ordering = ["code"]
        verbose_name = _("街道/乡镇")
        verbose_name_plural = _("街道/乡镇")

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"

    def clean(self) -> None:
        if self.district_id:
            _check_prefix(self.code, self.district.code, "code", _("区县"))


class Community(SampleMixin):
    code = models.CharField(_("代码"), max_length=12, unique=True, validators=[community_code_validator])
    name = models.CharField(_("名称"), max_length=64)
    street = models.ForeignKey(Street, models.PROTECT, related_name="communities", verbose_name=_("街道"))
    households = models.PositiveIntegerField(_("户数"), default=0)
    population = models.PositiveIntegerField(_("人口"), default=0)
    geom = models.MultiPolygonField(_("范围"), srid=SRID)

    objects = SpatialQuerySet.as_manager()

    class Meta:
        ordering = ["code"]
        verbose_name = _("社区/村")
        verbose_name_plural = _("社区/村")

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"

    def clean(self) -> None:
        if self.street_id:
            _check_prefix(self.code, self.street.code, "code", _("街道"))


class Grid(SampleMixin):
    code = models.CharField(_("网格代码"), max_length=15, unique=True, validators=[grid_code_validator])
    community = models.ForeignKey(Community, models.PROTECT, related_name="grids", verbose_name=_("社区"))
    households = models.PositiveIntegerField(_("户数"), default=0)
    population = models.PositiveIntegerField(_("人口"), default=0)
    worker = models.ForeignKey(settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True,
                               related_name="grids", verbose_name=_("网格员账号"))
    worker_name = models.CharField(_("网格员"), max_length=32, blank=True)
    geom = models.MultiPolygonField(_("范围"), srid=SRID)

    objects = SpatialQuerySet.as_manager()

    class Meta:
        ordering = ["code"]
        verbose_name = _("网格")
        verbose_name_plural = _("网格")

    def __str__(self) -> str:
        return self.code

    def clean(self) -> None:
        if self.community_id:
            _check_prefix(self.code, self.community.code, "code", _("社区"))
            _check_inside(self.geom, self.community.geom, "geom",
                          _("网格超出所属社区范围 %(area)s 平方米"))


class ServiceFacility(SampleMixin):
    class Kind(models.TextChoices):
        COMMUNITY_SERVICE_CENTRE = "community_service_centre", _("社区综合服务设施")
        CULTURE_SPORT = "culture_sport", _("文化体育设施")
        HEALTH_STATION = "health_station", _("社区卫生服务站")
        ELDERLY_CARE = "elderly_care", _("养老服务设施")
        KINDERGARTEN = "kindergarten", _("幼儿园")
        OTHER = "other", _("其他")

    class Status(models.TextChoices):
        PLANNED = "planned", _("规划")
        BUILT = "built", _("建成")
        ACCEPTED = "accepted", _("已验收")

    code = models.CharField(_("编码"), max_length=32, unique=True)
    name = models.CharField(_("名称"), max_length=128)
    kind = models.CharField(_("类型"), max_length=32, choices=Kind.choices,
                            default=Kind.COMMUNITY_SERVICE_CENTRE)
    floor_area_m2 = models.FloatField(_("建筑面积（平方米）"), validators=[non_negative], default=0)
    status = models.CharField(_("状态"), max_length=16, choices=Status.choices, default=Status.BUILT)
    community = models.ForeignKey(Community, models.SET_NULL, null=True, blank=True,
                                  related_name="facilities", verbose_name=_("社区"))
    project = models.ForeignKey("HousingProject", models.CASCADE, null=True, blank=True,
                                related_name="facilities", verbose_name=_("住宅项目"))
    geom = models.PointField(_("位置"), srid=SRID)
    footprint = models.PolygonField(_("占地范围"), srid=SRID, null=True, blank=True)
    service_radius_m = service_radius_field()

    objects = SpatialQuerySet.as_manager()

    class Meta:
        ordering = ["code"]
        verbose_name = _("社区服务设施")
        verbose_name_plural = _("社区服务设施")

    def __str__(self) -> str:
        return self.name


class Shelter(SampleMixin):
    class Level(models.TextChoices):
        EMERGENCY = "emergency", _("紧急避难场所")
        FIXED_SHORT = "fixed_short", _("固定避难场所（短期）")
        FIXED_MEDIUM = "fixed_medium", _("固定避难场所（中期）")
        FIXED_LONG = "fixed_long", _("固定避难场所（长期）")
        CENTRAL = "central", _("中心避难场所")

    code = models.CharField(_("编码"), max_length=32, unique=True)
    name = models.CharField(_("名称"), max_length=128)
    level = models.CharField(_("级别"), max_length=16, choices=Level.choices, default=Level.EMERGENCY)
    effective_area_m2 = models.FloatField(_("有效避难面积（平方米）"), validators=[non_negative])
    capacity_persons = models.PositiveIntegerField(
        _("容纳人数（覆盖）"), null=True, blank=True,
        help_text=_("留空则按有效面积 ÷ 该级别人均面积计算（GB 50413-2007 / GB 51143-2015）"))
    community = models.ForeignKey(Community, models.SET_NULL, null=True, blank=True,
                                  related_name="shelters", verbose_name=_("社区"))
    geom = models.MultiPolygonField(_("场地范围"), srid=SRID)
    service_radius_m = service_radius_field()

    objects = SpatialQuerySet.as_manager()

    class Meta:
        ordering = ["code"]
        verbose_name = _("应急避难场所")
        verbose_name_plural = _("应急避难场所")

    def __str__(self) -> str:
        return self.name

    @property
    def per_capita_m2(self) -> float:
        return float(settings.GISPORTAL_RULES["shelter_per_capita_m2"][self.level])

    @property
    def capacity(self) -> int:
        """Persons it can hold: the override, else effective area ÷ per-capita area of its level."""
        if self.capacity_persons is not None:
            return int(self.capacity_persons)
        return int(self.effective_area_m2 // self.per_capita_m2)

    def clean(self) -> None:
        if self.geom is not None and self.effective_area_m2 is not None:
            if self.effective_area_m2 > self.geom.area * 1.0001 + 1:
                raise ValidationError({"effective_area_m2": _(
                    "有效避难面积 %(eff)s 平方米大于场地面积 %(site)s 平方米") % {
                    "eff": round(self.effective_area_m2, 1), "site": round(self.geom.area, 1)}})


class FireStation(SampleMixin):
    class Kind(models.TextChoices):
        COMMUNITY_MICRO = "community_micro", _("社区微型消防站")
        KEY_UNIT_MICRO = "key_unit_micro", _("重点单位微型消防站")
        STANDARD = "standard", _("消防救援站")

    code = models.CharField(_("编码"), max_length=32, unique=True)
    name = models.CharField(_("名称"), max_length=128)
    kind = models.CharField(_("类型"), max_length=20, choices=Kind.choices, default=Kind.COMMUNITY_MICRO)
    staff = models.PositiveIntegerField(_("人员"), default=0)
    on_duty = models.PositiveIntegerField(_("每班执勤人数"), default=0)
    community = models.ForeignKey(Community, models.SET_NULL, null=True, blank=True,
                                  related_name="fire_stations", verbose_name=_("社区"))
    geom = models.PointField(_("位置"), srid=SRID)
    service_radius_m = service_radius_field()

    objects = SpatialQuerySet.as_manager()

    class Meta:
        ordering = ["code"]
        verbose_name = _("消防站")
        verbose_name_plural = _("消防站")

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.on_duty is not None and self.staff is not None and self.on_duty > self.staff:
            raise ValidationError({"on_duty": _("每班执勤人数不能超过人员总数")})


class HousingProject(SampleMixin):
    class Status(models.TextChoices):
        SUBMITTED = "submitted", _("已提交")
        IN_REVIEW = "in_review", _("审查中")
        APPROVED = "approved", _("已批准")
        REJECTED = "rejected", _("已退回")
        BUILT = "built", _("已建成")
        ACCEPTED = "accepted", _("已验收")

    name = models.CharField(_("项目名称"), max_length=128)
    developer = models.CharField(_("建设单位"), max_length=128)
    households = models.PositiveIntegerField(_("户数"), validators=[MinValueValidator(1)])
    population_declared = models.PositiveIntegerField(_("申报人口"), null=True, blank=True)
    status = models.CharField(_("状态"), max_length=16, choices=Status.choices, default=Status.SUBMITTED)
    district = models.ForeignKey(District, models.SET_NULL, null=True, blank=True, verbose_name=_("区县"))
    submitted_by = models.ForeignKey(settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True,
                                     related_name="projects", verbose_name=_("提交人"))
    created_at = models.DateTimeField(_("提交时间"), auto_now_add=True)
    updated_at = models.DateTimeField(_("更新时间"), auto_now=True)
    version = models.PositiveIntegerField(_("版本"), default=1)  # optimistic locking
    geom = models.MultiPolygonField(_("用地范围"), srid=SRID)

    objects = SpatialQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("住宅项目")
        verbose_name_plural = _("住宅项目")

    def __str__(self) -> str:
        return self.name

    @property
    def population(self) -> int:
        """Declared population, else households × persons per household (STANDARDS.md, 2.62)."""
        if self.population_declared:
            return int(self.population_declared)
        return round(self.households * settings.GISPORTAL_RULES["persons_per_household"])


class Road(SampleMixin):
    class RoadClass(models.TextChoices):
        TRUNK = "trunk", _("快速路")
        PRIMARY = "primary", _("主干路")
        SECONDARY = "secondary", _("次干路")
        BRANCH = "branch", _("支路")
        PATH = "path", _("步行道")

    name = models.CharField(_("名称"), max_length=128, blank=True)
    road_class = models.CharField(_("等级"), max_length=16, choices=RoadClass.choices, default=RoadClass.BRANCH)
    geom = models.MultiLineStringField(_("线形"), srid=SRID)

    objects = SpatialQuerySet.as_manager()

    class Meta:
        verbose_name = _("道路")
        verbose_name_plural = _("道路")

    def __str__(self) -> str:
        return self.name or f"#{self.pk}"


class CandidateSite(SampleMixin):
    code = models.CharField(_("编码"), max_length=32, unique=True)
    name = models.CharField(_("名称"), max_length=128, blank=True)
    capacity_persons = models.PositiveIntegerField(_("容纳人数"), null=True, blank=True)
    effective_area_m2 = models.FloatField(_("有效面积（平方米）"), null=True, blank=True, validators=[non_negative])
    geom = models.PointField(_("位置"), srid=SRID)

    objects = SpatialQuerySet.as_manager()

    class Meta:
        ordering = ["code"]
        verbose_name = _("候选选址")
        verbose_name_plural = _("候选选址")

    def __str__(self) -> str:
        return self.name or self.code


class PopulationSurface(SampleMixin):
    name = models.CharField(_("名称"), max_length=128)
    file = models.FileField(_("GeoTIFF 文件"), upload_to="population/")
    srid = models.PositiveIntegerField(_("坐标系 EPSG"))
    resolution_m = models.FloatField(_("分辨率（米）"), validators=[non_negative])
    width = models.PositiveIntegerField(_("列数"))
    height = models.PositiveIntegerField(_("行数"))
    total = models.FloatField(_("人口合计"), validators=[non_negative])
    sha256 = models.CharField(_("SHA-256"), max_length=64, blank=True)
    active = models.BooleanField(_("当前使用"), default=True)
    created_at = models.DateTimeField(_("登记时间"), auto_now_add=True)
    geom = models.PolygonField(_("覆盖范围"), srid=SRID)

    objects = SpatialQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("人口栅格")
        verbose_name_plural = _("人口栅格")

    def __str__(self) -> str:
        return self.name


class TableRevision(models.Model):
    """A token that changes with every write to a layer table, kept by database triggers (migration
    0005): INSERT, UPDATE, DELETE (and TRUNCATE on PostgreSQL) set it to a new random 63-bit value in the
    writer's own transaction, whatever wrote (ORM, bulk COPY, admin, raw SQL, a restore); on PostgreSQL
    at COMMIT, once per transaction (so concurrent writers never wait on it), the writer reading its own
    table as dirty until then (``layers.revisions``). Readers that cache something derived from a table
    (``layers.geojson_cache``, ``layers.snapshots``) compare tokens: equal token, same committed rows.
    Random rather than a counter so that a token never comes back after the table is emptied and
    refilled (a flush truncates this table too)."""

    table = models.CharField(max_length=63, primary_key=True)
    token = models.BigIntegerField()

    class Meta:
        verbose_name = _("图层数据版本")
        verbose_name_plural = _("图层数据版本")

    def __str__(self) -> str:
        return f"{self.table}@{self.token}"


class Job(models.Model):
    """A recorded run of a long job (import, coverage, siting, export, review): who ran what, with which
    parameters and data versions, when, its progress and its result — so every analysis is reproducible."""

    class Kind(models.TextChoices):
        IMPORT = "import", _("导入")
        COVERAGE = "coverage", _("覆盖分析")
        SITING = "siting", _("选址优化")
        EXPORT = "export", _("导出")
        REVIEW = "review", _("项目审查")

    class Status(models.TextChoices):
        QUEUED = "queued", _("排队中")
        RUNNING = "running", _("运行中")
        DONE = "done", _("完成")
        FAILED = "failed", _("失败")
        CANCELLED = "cancelled", _("已取消")

    kind = models.CharField(_("类型"), max_length=16, choices=Kind.choices)
    status = models.CharField(_("状态"), max_length=16, choices=Status.choices, default=Status.QUEUED)
    params = models.JSONField(_("参数"), default=dict)
    data_version = models.CharField(_("数据版本"), max_length=64, blank=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True,
                             related_name="jobs", verbose_name=_("用户"))
    progress = models.FloatField(_("进度"), default=0.0)
    message = models.CharField(_("进度说明"), max_length=200, blank=True)
    cancel_requested = models.BooleanField(_("请求取消"), default=False)
    result = models.JSONField(_("结果"), null=True, blank=True)
    result_file = models.FileField(_("结果文件"), upload_to="jobs/", blank=True)
    error = models.TextField(_("错误"), blank=True)
    created_at = models.DateTimeField(_("创建时间"), auto_now_add=True)
    started_at = models.DateTimeField(_("开始时间"), null=True, blank=True)
    finished_at = models.DateTimeField(_("结束时间"), null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("任务")
        verbose_name_plural = _("任务")

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk}"


from .models_review import ReviewDecision, ReviewReport  # noqa: E402,F401  (issue 4: reports and history)

"""Default attribute mapping per KIND, with Chinese and English aliases, and value coercion.

``--map FIELD=ATTR`` sets a model field from a named attribute (and wins over the aliases); attributes that
map to nothing are listed in the report as unknown.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from layers import models

NAME = ("name", "名称", "名字", "mc", "title", "标题")
CODE = ("code", "编码", "代码", "bm", "dm", "id号")


@dataclass(frozen=True)
class FieldSpec:
    name: str
    aliases: tuple[str, ...]
    type: str = "str"                       # str | int | float | bool | choice
    required: bool = False
    max_value: float | None = None          # above this the value is "absurd"
    pattern: str | None = None
    positive: bool = False                  # 0 is refused too (a distance)


@dataclass(frozen=True)
class ParentSpec:
    field: str                               # FK field name on the model
    model: type
    code_len: int | None                     # own-code prefix length naming the parent, if hierarchical
    aliases: tuple[str, ...]
    required: bool
    by_geometry: str                         # "most_area" | "contains_point"


@dataclass(frozen=True)
class KindSpec:
    kind: str
    model: type
    geom: str                                # multipolygon | point | multilinestring
    fields: tuple[FieldSpec, ...]
    parent: ParentSpec | None = None
    code_field: str | None = "code"
    extras: dict = field(default_factory=dict)


_PEOPLE = 2_000_000
# A facility's own service distance in metres (optional; empty = the rule set's for its kind/level).
SERVICE_RADIUS = FieldSpec("service_radius_m", ("service_radius", "radius_m", "svc_radius", "服务半径",
                                                "服务半径米", "服务半径（米）", "服务距离"),
                           "float", max_value=100_000, positive=True)
SPECS: dict[str, KindSpec] = {s.kind: s for s in [
    KindSpec("districts", models.District, "multipolygon", (
        FieldSpec("code", CODE + ("adcode", "区划代码", "行政区划代码", "xzqdm"), required=True, pattern=r"^\d{6}$"),
        FieldSpec("name", NAME + ("区县名称", "xzqmc"), required=True),
        FieldSpec("kind", ("kind", "类型", "type", "level", "级别"), "choice"),
        FieldSpec("source", ("source", "来源", "数据来源"), "str"),
        FieldSpec("approximate", ("approximate", "approx", "近似", "近似边界"), "bool"),
    )),
    KindSpec("streets", models.Street, "multipolygon", (
        FieldSpec("code", CODE + ("街道代码", "乡镇代码"), required=True, pattern=r"^\d{9}$"),
        FieldSpec("name", NAME + ("街道名称", "乡镇名称"), required=True),
    ), ParentSpec("district", models.District, 6,
                  ("district", "district_code", "区县代码", "所属区县", "区县编码"), True, "most_area")),
    KindSpec("communities", models.Community, "multipolygon", (
        FieldSpec("code", CODE + ("社区代码", "村代码"), required=True, pattern=r"^\d{12}$"),
        FieldSpec("name", NAME + ("社区名称", "村名"), required=True),
        FieldSpec("households", ("households", "户数", "hs"), "int", max_value=500_000),
        FieldSpec("population", ("population", "人口", "人口数", "rk", "pop"), "int", max_value=_PEOPLE),
    ), ParentSpec("street", models.Street, 9,
                  ("street", "street_code", "街道代码", "所属街道", "街道编码"), True, "most_area")),
    KindSpec("grids", models.Grid, "multipolygon", (
        FieldSpec("code", CODE + ("网格代码", "网格编码", "wgbm"), required=True, pattern=r"^\d{15}$"),
        FieldSpec("households", ("households", "户数", "hs"), "int", max_value=100_000),
        FieldSpec("population", ("population", "人口", "人口数", "rk", "pop"), "int", max_value=300_000),
        FieldSpec("worker_name", ("worker_name", "worker", "网格员", "网格员姓名"), "str"),
    ), ParentSpec("community", models.Community, 12,
                  ("community", "community_code", "社区代码", "所属社区", "社区编码"), True, "most_area")),
    KindSpec("facilities", models.ServiceFacility, "point", (
        FieldSpec("code", CODE, required=True),
        FieldSpec("name", NAME, required=True),
        FieldSpec("kind", ("kind", "类型", "type", "设施类型"), "choice"),
        FieldSpec("floor_area_m2", ("floor_area_m2", "面积", "area", "建筑面积", "floor_area"), "float",
                  max_value=1_000_000),
        FieldSpec("status", ("status", "状态"), "choice"),
        SERVICE_RADIUS,
    ), ParentSpec("community", models.Community, None,
                  ("community", "community_code", "社区代码", "所属社区"), False, "contains_point")),
    KindSpec("shelters", models.Shelter, "multipolygon", (
        FieldSpec("code", CODE, required=True),
        FieldSpec("name", NAME, required=True),
        FieldSpec("level", ("level", "级别", "等级", "类型"), "choice"),
        FieldSpec("effective_area_m2", ("effective_area_m2", "eff_area", "有效面积", "有效避难面积", "面积", "area"), "float",
                  required=True, max_value=50_000_000),
        FieldSpec("capacity_persons", ("capacity_persons", "capacity", "容纳人数", "可容纳人数"), "int",
                  max_value=_PEOPLE),
        SERVICE_RADIUS,
    ), ParentSpec("community", models.Community, None,
                  ("community", "community_code", "社区代码", "所属社区"), False, "most_area")),
    KindSpec("fire_stations", models.FireStation, "point", (
        FieldSpec("code", CODE, required=True),
        FieldSpec("name", NAME, required=True),
        FieldSpec("kind", ("kind", "类型", "type"), "choice"),
        FieldSpec("staff", ("staff", "人员", "人数", "人员数"), "int", max_value=1_000),
        FieldSpec("on_duty", ("on_duty", "执勤人数", "每班执勤人数"), "int", max_value=1_000),
        SERVICE_RADIUS,
    ), ParentSpec("community", models.Community, None,
                  ("community", "community_code", "社区代码", "所属社区"), False, "contains_point")),
    KindSpec("roads", models.Road, "multilinestring", (
        FieldSpec("name", NAME + ("道路名称",)),
        FieldSpec("road_class", ("road_class", "class", "等级", "道路等级", "级别", "fclass"), "choice"),
    ), code_field=None),
    KindSpec("candidates", models.CandidateSite, "point", (
        FieldSpec("code", CODE, required=True),
        FieldSpec("name", NAME),
        FieldSpec("capacity_persons", ("capacity_persons", "capacity", "容纳人数"), "int", max_value=_PEOPLE),
        FieldSpec("effective_area_m2", ("effective_area_m2", "eff_area", "有效面积", "面积", "area"), "float",
                  max_value=50_000_000),
    )),
]}

# Synonyms for choice values, on top of each choice's value and its Chinese label.
CHOICE_SYNONYMS = {
    ("districts", "kind"): {"区": "district", "市辖区": "district", "县": "county", "管理区": "management_area",
                            "开发区": "development_zone"},
    ("roads", "road_class"): {"motorway": "trunk", "trunk": "trunk", "primary": "primary",
                              "secondary": "secondary", "tertiary": "branch", "residential": "branch",
                              "footway": "path", "pedestrian": "path"},
    ("shelters", "level"): {"紧急": "emergency", "短期": "fixed_short", "中期": "fixed_medium",
                            "长期": "fixed_long", "中心": "central"},
}


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]", "", str(name)).lower()


class MappingProblem(ValueError):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def parse_map_options(items: list[str] | dict | None) -> dict[str, str]:
    """``["name=MC", "code=DM"]`` -> ``{"name": "MC", "code": "DM"}``."""
    if not items:
        return {}
    if isinstance(items, dict):
        return dict(items)
    out = {}
    for item in items:
        if "=" not in item:
            raise MappingProblem("map_syntax", f"--map 应写成 字段=属性名，收到 {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


@dataclass
class Resolved:
    """Which attribute feeds each model field (and the parent code), and which attributes are unused."""

    fields: dict[str, str]
    parent_attr: str | None
    unknown: list[str]


def resolve(spec: KindSpec, attributes: list[str], overrides: dict[str, str]) -> Resolved:
    valid = {f.name for f in spec.fields} | ({spec.parent.field} if spec.parent else set())
    for target, attr in overrides.items():
        if target not in valid:
            raise MappingProblem("map_unknown_field",
                                 f"--map {target}={attr}：{spec.kind} 没有字段 {target}（可用：{', '.join(sorted(valid))}）")
        if attr not in attributes:
            raise MappingProblem("map_unknown_attribute",
                                 f"--map {target}={attr}：文件中没有属性 {attr}（有：{', '.join(attributes)}）")
    by_key = {}
    for a in attributes:
        by_key.setdefault(_key(a), a)
    used = set(overrides.values())
    fields = {}
    for f in spec.fields:
        if f.name in overrides:
            fields[f.name] = overrides[f.name]
            continue
        for alias in (f.name,) + f.aliases:
            a = by_key.get(_key(alias))
            if a is not None and a not in used:
                fields[f.name] = a
                used.add(a)
                break
    parent_attr = None
    if spec.parent:
        if spec.parent.field in overrides:
            parent_attr = overrides[spec.parent.field]
        else:
            for alias in spec.parent.aliases:
                a = by_key.get(_key(alias))
                if a is not None and a not in used:
                    parent_attr = a
                    used.add(a)
                    break
    unknown = [a for a in attributes if a not in used]
    return Resolved(fields, parent_attr, unknown)


def choice_lookup(spec: KindSpec, field_name: str) -> dict[str, str]:
    model_field = spec.model._meta.get_field(field_name)
    table = {}
    for value, label in model_field.choices:
        table[_key(value)] = value
        table[_key(str(label))] = value
    for k, v in CHOICE_SYNONYMS.get((spec.kind, field_name), {}).items():
        table[_key(k)] = v
    return table


def coerce(spec: KindSpec, f: FieldSpec, value, choices: dict[str, str] | None):
    """A raw attribute value as the model field's type; ValueError with a reason when it cannot be."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if f.type == "str":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        text = str(value).strip()
        if f.pattern and not re.match(f.pattern, text):
            raise ValueError(f"{f.name} 值 {text!r} 格式不对（应匹配 {f.pattern}）")
        return text
    if f.type in ("int", "float"):
        try:
            num = float(str(value).replace(",", "").strip()) if isinstance(value, str) else float(value)
        except ValueError:
            raise ValueError(f"{f.name} 值 {value!r} 不是数字") from None
        if not math.isfinite(num):
            raise ValueError(f"{f.name} 值 {value!r} 不是有限数")
        if num < 0:
            raise ValueError(f"{f.name} 为负数（{value}）")
        if f.positive and num == 0:
            raise ValueError(f"{f.name} 应大于 0（留空则按规则）")
        if f.max_value is not None and num > f.max_value:
            raise ValueError(f"{f.name} 值 {value} 不合理（上限 {f.max_value:,.0f}）")
        if f.type == "int":
            if not num.is_integer():
                raise ValueError(f"{f.name} 值 {value!r} 应为整数")
            return int(num)
        return num
    if f.type == "bool":
        return _key(value) in {"1", "true", "yes", "y", "是", "t"}
    if f.type == "choice":
        key = _key(value)
        if key in choices:
            return choices[key]
        raise ValueError(f"{f.name} 值 {value!r} 不在可选值中（{', '.join(sorted(set(choices.values())))}）")
    raise AssertionError(f.type)

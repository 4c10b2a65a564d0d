"""The layer KINDs of the command contract (DESIGN.md) and the model behind each."""
from __future__ import annotations

from dataclasses import dataclass

from django.utils.translation import gettext_lazy as _

from . import models


@dataclass(frozen=True)
class LayerKind:
    kind: str
    model: type
    label: object
    fields: tuple[str, ...]  # attributes shown in popups, tables and exports
    color: str


LAYERS: dict[str, LayerKind] = {k.kind: k for k in [
    LayerKind("districts", models.District, _("区县/管理区"), ("code", "name", "kind", "approximate"), "#1f4e79"),
    LayerKind("streets", models.Street, _("街道/乡镇"), ("code", "name"), "#7f3c8d"),
    LayerKind("communities", models.Community, _("社区/村"), ("code", "name", "households", "population"),
              "#11a579"),
    LayerKind("grids", models.Grid, _("网格"), ("code", "households", "population", "worker_name"), "#e68310"),
    LayerKind("facilities", models.ServiceFacility, _("社区服务设施"), ("code", "name", "kind", "floor_area_m2",
                                                                       "status"), "#3969ac"),
    LayerKind("shelters", models.Shelter, _("应急避难场所"), ("code", "name", "level", "effective_area_m2"),
              "#008695"),
    LayerKind("fire_stations", models.FireStation, _("消防站"), ("code", "name", "kind", "staff", "on_duty"),
              "#cf1c90"),
    LayerKind("roads", models.Road, _("道路"), ("name", "road_class"), "#80868b"),
    LayerKind("candidates", models.CandidateSite, _("候选选址"), ("code", "name", "capacity_persons"), "#a5aa99"),
]}


def layer_get(kind: str) -> LayerKind:
    """The layer for a KIND name; KeyError with the valid names otherwise."""
    try:
        return LAYERS[kind]
    except KeyError:
        raise KeyError(f"unknown layer kind {kind!r}; expected one of {', '.join(LAYERS)}") from None

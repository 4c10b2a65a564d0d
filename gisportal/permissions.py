"""Who may see and do what: the role rules (issue 8), in one place for pages, the API and tasks.

Roles are the groups made by ``layers.services.roles_ensure``: ``planner``, ``emergency_official``,
``field_staff``, ``admin`` (a superuser counts as admin). Model permissions say which layers a role
may *read*; the object rules here narrow that down:

* a field worker (group ``field_staff``, not an admin) sees only the grids whose ``worker`` is them;
* planners own their projects and review reports (``HousingProject.submitted_by``); admins see all;
* emergency officials (and admins) run coverage and siting;
* only admins create, change or delete base-layer features, and import files;
* a job is seen by whoever started it and by admins; coverage and siting runs are shared among the
  people who may run them (as on the coverage page); only the owner or an admin cancels a job.
"""
from __future__ import annotations

from gisportal.auth_backend import ROLE_ATTR, load_roles_and_permissions
from layers import models
from layers.registry import layer_get

PLANNER, EMERGENCY, FIELD_STAFF, ADMIN = "planner", "emergency_official", "field_staff", "admin"
ROLES = (PLANNER, EMERGENCY, FIELD_STAFF, ADMIN)
ANALYSIS_KINDS = (models.Job.Kind.COVERAGE, models.Job.Kind.SITING)


def user_roles(user) -> frozenset[str]:
    """The role groups of ``user`` (cached on the user object for the request)."""
    if user is None or not user.is_authenticated:
        return frozenset()
    cached = getattr(user, ROLE_ATTR, None)
    if cached is None:  # with the permissions, in one query (gisportal.auth_backend)
        load_roles_and_permissions(user, ROLES)
        cached = getattr(user, ROLE_ATTR)
    return cached


def is_admin(user) -> bool:
    return bool(user is not None and user.is_authenticated and user.is_active
                and (user.is_superuser or ADMIN in user_roles(user)))


def is_field_worker(user) -> bool:
    """In group field_staff and not an admin: sees only their own grids."""
    return FIELD_STAFF in user_roles(user) and not is_admin(user)


def is_planner(user) -> bool:
    return PLANNER in user_roles(user)


def can_run_analysis(user) -> bool:
    """Coverage and siting runs: emergency officials and admins."""
    return is_admin(user) or EMERGENCY in user_roles(user)


def can_review(user) -> bool:
    """Submit housing projects for review and decide on them: planners and admins."""
    return is_admin(user) or (is_planner(user) and user.has_perm("layers.add_housingproject"))


def can_import(user, kind: str | None = None) -> bool:
    """Import into ``kind`` (any kind when None): admins, or the model's ``add`` permission, so base
    layers stay with admins and emergency officials may load candidate sites (as on the import page)."""
    from importers.mapping import SPECS

    if user is None or not user.is_authenticated or not user.is_active:
        return False
    if is_admin(user):
        return True
    kinds = [kind] if kind is not None else list(SPECS)
    return any(k in SPECS and user.has_perm(f"layers.add_{SPECS[k].model._meta.model_name}") for k in kinds)


def can_view_layer(user, kind: str) -> bool:
    """Read access to layer ``kind``: the model's ``view`` permission."""
    model = layer_get(kind).model
    return bool(user is not None and user.is_authenticated and user.is_active
                and user.has_perm(f"layers.view_{model._meta.model_name}"))


def can_edit_layer(user, kind: str) -> bool:
    """Base layers are edited by admins only (whatever model permissions say)."""
    layer_get(kind)
    return is_admin(user)


def layer_queryset(user, kind: str, qs=None):
    """The rows of layer ``kind`` that ``user`` may see (grids: a field worker's own only)."""
    layer = layer_get(kind)
    qs = layer.model.objects.all() if qs is None else qs
    if not can_view_layer(user, kind):
        return qs.none()
    if kind == "grids" and is_field_worker(user):
        return qs.filter(worker=user)
    return qs


def grids_visible(user, qs=None):
    return layer_queryset(user, "grids", qs)


def projects_visible(user, qs=None):
    """Housing projects ``user`` may see: an admin all, a planner the ones they submitted."""
    qs = models.HousingProject.objects.all() if qs is None else qs
    if is_admin(user):
        return qs
    if is_planner(user) and user.has_perm("layers.view_housingproject"):
        return qs.filter(submitted_by=user)
    return qs.none()


def reports_visible(user, qs=None):
    qs = models.ReviewReport.objects.all() if qs is None else qs
    if is_admin(user):
        return qs
    if is_planner(user) and user.has_perm("layers.view_housingproject"):
        return qs.filter(project__submitted_by=user)
    return qs.none()


def jobs_visible(user, qs=None):
    """Jobs ``user`` may see: their own; every job for an admin; shared analysis runs for analysts."""
    from django.db.models import Q

    qs = models.Job.objects.all() if qs is None else qs
    if user is None or not user.is_authenticated:
        return qs.none()
    if is_admin(user):
        return qs
    rule = Q(user=user)
    if can_run_analysis(user):
        rule |= Q(kind__in=ANALYSIS_KINDS)
    return qs.filter(rule)


def can_cancel_job(user, job: models.Job) -> bool:
    return is_admin(user) or (job.user_id is not None and job.user_id == getattr(user, "pk", None))

"""gisportal.auth_backend: the same permissions as Django's ModelBackend, and roles, in one query."""
from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend as DjangoModelBackend
from django.contrib.auth.models import AnonymousUser, Group, Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext

from gisportal import permissions as P
from gisportal.auth_backend import ModelBackend
from layers import services

pytestmark = pytest.mark.django_db


def _fresh(user):
    return get_user_model().objects.get(pk=user.pk)  # no per-request caches


@pytest.fixture
def people():
    groups = services.roles_ensure()
    User = get_user_model()
    extra = Group.objects.create(name="999_extra")  # a group that is not a role
    extra.permissions.add(Permission.objects.get(codename="change_grid"))
    out = {}
    for name, roles in {"planner": ["planner"], "two": ["planner", "emergency_official"], "none": [],
                        "field": ["field_staff"], "admin": ["admin"]}.items():
        u = User.objects.create_user(f"999_auth_{name}", password="x-999-auth")
        u.groups.add(*[groups[r] for r in roles])
        out[name] = u
    out["none"].groups.add(extra)
    out["none"].user_permissions.add(Permission.objects.get(codename="view_shelter"))
    out["planner"].user_permissions.add(Permission.objects.get(codename="delete_shelter"))
    out["inactive"] = User.objects.create_user("999_auth_inactive", password="x-999-auth", is_active=False)
    out["inactive"].groups.add(groups["planner"])
    out["super"] = User.objects.create_superuser("999_auth_super", password="x-999-auth")
    return out


def test_same_permissions_as_djangos_backend(people):
    for name, user in people.items():
        want = DjangoModelBackend().get_all_permissions(_fresh(user))
        got = ModelBackend().get_all_permissions(_fresh(user))
        assert got == want, name
        fresh = _fresh(user)
        for perm in sorted(want)[:20] + ["layers.change_grid", "layers.delete_shelter", "layers.view_shelter",
                                          "layers.add_housingproject", "nope.nothing"]:
            assert fresh.has_perm(perm) == _fresh(user).has_perm(perm) == (
                user.is_active and (user.is_superuser or perm in want)), (name, perm)
    assert people["none"].has_perm("layers.change_grid")  # via a non-role group
    assert people["none"].has_perm("layers.view_shelter")  # a user's own permission
    assert not _fresh(people["inactive"]).has_perm("layers.add_housingproject")
    assert ModelBackend().get_all_permissions(AnonymousUser()) == set()


def test_roles_and_permissions_in_one_query(people):
    user = _fresh(people["two"])
    with CaptureQueriesContext(connection) as q:
        roles = P.user_roles(user)
        assert user.has_perm("layers.add_housingproject")
        assert not user.has_perm("layers.delete_shelter")
        assert P.can_review(user) and P.can_run_analysis(user)
    assert roles == {"planner", "emergency_official"}
    assert len(q.captured_queries) == 1
    assert P.user_roles(_fresh(people["none"])) == frozenset()  # "999_extra" is not a role
    assert P.user_roles(_fresh(people["super"])) == frozenset() and P.is_admin(_fresh(people["super"]))
    assert P.is_admin(_fresh(people["admin"])) and not P.is_admin(_fresh(people["planner"]))


def test_a_revoked_permission_counts_on_the_next_request(people):
    user = _fresh(people["planner"])
    assert P.can_review(user)
    Group.objects.get(name="planner").permissions.remove(Permission.objects.get(codename="add_housingproject"))
    assert P.can_review(user)  # cached for this request, as Django's backend does
    assert not P.can_review(_fresh(people["planner"]))

"""Shared set-up of the API, permission and job tests: one user per role, and their clients."""
from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from layers import models, services

ROLES = ("planner", "emergency_official", "field_staff", "admin")


def make_users() -> dict:
    """One user per role (codes 999...), the field worker owning the first 2 grids of a community."""
    groups = services.roles_ensure()
    users = {}
    for role in ROLES:
        user = get_user_model().objects.create_user(f"999_{role}", password="pw-999-" + role)
        user.groups.add(groups[role])
        if role == "admin":
            user.is_staff = True
            user.save()
        users[role] = user
    community = models.Community.objects.filter(grids__isnull=False).order_by("code").first()
    if community is not None:
        mine = list(community.grids.order_by("code").values_list("pk", flat=True)[:2])
        models.Grid.objects.filter(pk__in=mine).update(worker=users["field_staff"])
    return users


def client_for(user, *, csrf: bool = False) -> APIClient:
    client = APIClient(enforce_csrf_checks=csrf)
    if user is not None:
        client.force_authenticate(user=user) if not csrf else client.force_login(user)
    return client


@pytest.fixture
def users(db):
    return make_users()


@pytest.fixture
def demo(db):
    if not models.Shelter.objects.filter(is_sample=True).exists():
        pytest.skip("the demo city is not loaded (GISPORTAL_TEST_NO_DEMO=1)")

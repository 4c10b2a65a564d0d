"""Django's ModelBackend with one query per request for a user's roles and permissions.

``django.contrib.auth.backends.ModelBackend`` reads a user's own permissions and their groups'
permissions in two ORM queries, and ``gisportal.permissions.user_roles`` read the role groups in a
third: about 3.5 CPU ms per API request of a signed-in user, most of it compiling the queries (the
review API: ~15 % of its CPU). :func:`load_roles_and_permissions` reads all three in one plain SQL
``UNION ALL`` (~0.4 CPU ms) and caches them on the user object for the request, as Django does; the
rules are Django's: inactive and anonymous users have no permissions, a superuser has them all
(``User.has_perm`` answers before any backend is asked).
"""
from __future__ import annotations

import functools

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend as DjangoModelBackend
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.db import connection

ROLE_ATTR = "_gisportal_roles"
PERM_ATTR = "_gisportal_perms"


@functools.cache
def _sql(n_roles: int) -> str:
    """The one query (plain SQL, the same on SQLite and PostgreSQL): compiling the equivalent ORM union
    cost ~3.5 CPU ms per request, the statement itself ~0.4."""
    q = connection.ops.quote_name
    user = get_user_model()
    g, ug, p = q(Group._meta.db_table), q(user.groups.through._meta.db_table), q(Permission._meta.db_table)
    ct, up = q(ContentType._meta.db_table), q(user.user_permissions.through._meta.db_table)
    gp = q(Group.permissions.through._meta.db_table)
    roles = ", ".join(["%s"] * n_roles)
    return (f"SELECT 'r', g.name, '' FROM {g} g JOIN {ug} ug ON ug.group_id = g.id"
            f" WHERE ug.user_id = %s AND g.name IN ({roles})"
            f" UNION ALL SELECT 'p', ct.app_label, p.codename FROM {p} p JOIN {ct} ct ON ct.id = p.content_type_id"
            f" JOIN {up} up ON up.permission_id = p.id WHERE up.user_id = %s"
            f" UNION ALL SELECT 'p', ct.app_label, p.codename FROM {p} p JOIN {ct} ct ON ct.id = p.content_type_id"
            f" JOIN {gp} gp ON gp.permission_id = p.id JOIN {ug} ug ON ug.group_id = gp.group_id"
            f" WHERE ug.user_id = %s")


def load_roles_and_permissions(user, role_names) -> None:
    """Cache ``user``'s groups among ``role_names`` and their permissions on it (one query)."""
    role_names = tuple(role_names)
    with connection.cursor() as cur:
        cur.execute(_sql(len(role_names)), [user.pk, *role_names, user.pk, user.pk])
        rows = cur.fetchall()
    setattr(user, ROLE_ATTR, frozenset(a for kind, a, _ in rows if kind == "r"))
    setattr(user, PERM_ATTR, frozenset(f"{a}.{b}" for kind, a, b in rows if kind == "p"))


class ModelBackend(DjangoModelBackend):
    """``get_all_permissions`` from :func:`load_roles_and_permissions` (same answers, one query)."""

    def get_all_permissions(self, user_obj, obj=None):
        if not user_obj.is_active or user_obj.is_anonymous or obj is not None:
            return set()
        if user_obj.is_superuser:
            return super().get_all_permissions(user_obj, obj)
        if not hasattr(user_obj, PERM_ATTR):
            from gisportal.permissions import ROLES

            load_roles_and_permissions(user_obj, ROLES)
        return set(getattr(user_obj, PERM_ATTR))

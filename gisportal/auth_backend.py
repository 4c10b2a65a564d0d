"""Django's ModelBackend with one query per request for a user's roles and permissions.

``django.contrib.auth.backends.ModelBackend`` reads a user's own permissions and their groups'
permissions in two queries, and ``gisportal.permissions.user_roles`` read the role groups in a third.
Every API request of a signed-in user paid those three round trips (the review API: about a tenth of
its database time). :func:`load_roles_and_permissions` reads all three in one ``UNION`` and caches
them on the user object for the request, as Django does; the rules are Django's: inactive and
anonymous users have no permissions, a superuser has them all (``User.has_perm`` answers before any
backend is asked).
"""
from __future__ import annotations

from django.contrib.auth.backends import ModelBackend as DjangoModelBackend
from django.contrib.auth.models import Group, Permission
from django.db.models import CharField, F, Value

ROLE_ATTR = "_gisportal_roles"
PERM_ATTR = "_gisportal_perms"


def load_roles_and_permissions(user, role_names) -> None:
    """Cache ``user``'s groups among ``role_names`` and, unless superuser, their permissions (one query)."""
    roles = (Group.objects.filter(user=user, name__in=list(role_names)).order_by()
             .values_list(Value("r", output_field=CharField()), F("name"), Value("", output_field=CharField())))
    if user.is_superuser:  # every permission (User.has_perm answers first): roles only
        setattr(user, ROLE_ATTR, frozenset(name for _, name, _ in roles))
        return
    own = Permission.objects.filter(user=user).order_by().values_list(
        Value("p", output_field=CharField()), F("content_type__app_label"), F("codename"))
    via_group = Permission.objects.filter(group__user=user).order_by().values_list(
        Value("p", output_field=CharField()), F("content_type__app_label"), F("codename"))
    got_roles, perms = set(), set()
    for kind, a, b in roles.union(own, via_group, all=True):
        if kind == "r":
            got_roles.add(a)
        else:
            perms.add(f"{a}.{b}")
    setattr(user, ROLE_ATTR, frozenset(got_roles))
    setattr(user, PERM_ATTR, frozenset(perms))


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

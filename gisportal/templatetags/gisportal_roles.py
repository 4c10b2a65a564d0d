"""Role tests for templates: ``{% load gisportal_roles %}{% if user|is_admin %}``."""
from django import template

from gisportal import permissions

register = template.Library()


@register.filter
def is_admin(user) -> bool:
    """The same test as the views (``gisportal.permissions.is_admin``): a superuser or group ``admin``."""
    return permissions.is_admin(user)

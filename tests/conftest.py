"""Test-wide setup.

The test database (SpatiaLite in memory, or PostGIS with DATABASE_URL) gets the Zhangjiakou demo loaded
once per session, so database tests see a realistic city; each test runs in a rolled-back transaction.
Tests that create their own rows use codes outside Zhangjiakou's (999xxx) so they never collide with it.
"""
import os

os.environ.setdefault("GISPORTAL_DEV_KEY", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    from django.core.management import call_command

    if os.environ.get("GISPORTAL_TEST_NO_DEMO") != "1":  # a quicker loop while developing
        with django_db_blocker.unblock():
            call_command("load_demo", verbosity=0)
    yield


def pytest_collection_modifyitems(config, items):
    """Run the browser tests last: Playwright's sync API keeps an event loop on the main thread while a
    browser is open, and Django refuses ORM calls from a thread with a running loop."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)

from django.apps import AppConfig


class GisportalConfig(AppConfig):
    name = "gisportal"
    verbose_name = "gisportal"

    def ready(self):
        from . import audit

        audit.connect()  # the audit log's receivers and export wrappers (gisportal/audit.py)

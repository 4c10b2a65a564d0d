"""manage.py create_demo_users: a demo account per role; new passwords are printed once."""
import os
import stat

from django.conf import settings
from django.core.management.base import BaseCommand

from layers import services


class Command(BaseCommand):
    help = "Create the role groups and one demo user per role (passwords from GISPORTAL_DEMO_PASSWORD_<ROLE> or random)."

    def handle(self, *args, **options):
        env = {role: os.environ[f"GISPORTAL_DEMO_PASSWORD_{role.upper()}"]
               for role in services.DEMO_USERS if f"GISPORTAL_DEMO_PASSWORD_{role.upper()}" in os.environ}
        created = services.demo_users_create(env)
        new = {u: p for u, p in created.items() if p}
        for username, password in created.items():
            if password:
                self.stdout.write(f"  {username:16s} password: {password}")
            else:
                self.stdout.write(f"  {username:16s} (exists; password unchanged)")
        if new:
            # Kept for the demo operator only (mode 0600, under the ignored var/ folder).
            path = settings.VAR_DIR / "demo-credentials.txt"
            with open(path, "a", encoding="utf-8") as fh:
                for username, password in new.items():
                    fh.write(f"{username} {password}\n")
            os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
            self.stdout.write(f"create_demo_users: new passwords also saved to {path} (mode 0600)")

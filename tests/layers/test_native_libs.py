"""Regression: shapely used after the first SpatiaLite/PostGIS query must not crash (see layers/apps.py)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import django, numpy as np
django.setup()
from django.db import connection
connection.ensure_connection()
import shapely
from shapely.geometry import box
p = box(0, 0, 10, 10)
shapely.prepare(p)
xy = np.random.default_rng(1).random((2, 2000)) * 20
print(int(shapely.contains_xy(p, xy[0], xy[1]).sum()))
import rasterio, pyproj
print(pyproj.Transformer.from_crs(4326, 4547, always_xy=True).transform(114.0, 40.0)[0] > 0)
"""


def test_wheels_survive_spatialite_loaded_first(tmp_path):
    env = {"DJANGO_SETTINGS_MODULE": "gisportal.settings_test", "PYTHONPATH": str(ROOT),
           "GISPORTAL_VAR_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    import os

    if os.environ.get("DATABASE_URL"):
        env["DATABASE_URL"] = os.environ["DATABASE_URL"]
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.split()
    assert 400 < int(lines[0]) < 600 and lines[1] == "True"

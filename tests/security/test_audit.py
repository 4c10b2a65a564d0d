"""The audit log (issue 9, item 6): append-only, hash-chained, and fed by every import, review, analysis
run and export — each recorded once, with who, what, parameters and a result digest.

Runs on SpatiaLite and PostGIS. Tampering is simulated with raw SQL through ``connection.cursor()`` (the
only raw SQL here: it stands for someone editing the database behind the application).
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.utils import timezone

from gisportal import audit, tasks
from importers import exports
from gisportal.models import GENESIS_HASH, AuditEntry, canonical_json
from importers.models import ImportRun
from layers import models, services, services_decisions, services_review
from layers.models_review import ReviewDecision, ReviewReport
from tests.gisportal.api_helpers import make_users

from .conftest import SEED, backend, count

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]
FORMATS = ROOT / "fixtures" / "formats"
REVIEW = ROOT / "fixtures" / "review"


# ------------------------------------------------------------------ helpers
def last_seq() -> int:
    return AuditEntry.objects.order_by("-seq").values_list("seq", flat=True).first() or 0


def entries_since(seq: int) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(seq__gt=seq).order_by("seq"))


def one_since(seq: int) -> AuditEntry:
    new = entries_since(seq)
    assert len(new) == 1, [(e.action, e.object_type, e.object_id, e.summary) for e in new]
    return new[0]


def sha256_file(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def sha256_json(doc) -> str:
    """Independent of audit.digest_json: sorted keys, no spaces, UTF-8."""
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def tamper(sql: str, params: list) -> None:
    """Change the table behind the ORM (what the hash chain must reveal)."""
    table = connection.ops.quote_name(AuditEntry._meta.db_table)
    with connection.cursor() as cur:
        cur.execute(sql.format(table=table), params)


@pytest.fixture
def demo():
    if not models.Shelter.objects.filter(is_sample=True).exists():
        pytest.skip("the demo city is not loaded (GISPORTAL_TEST_NO_DEMO=1)")


@pytest.fixture
def users():
    return make_users()


# ------------------------------------------------------------------ append-only
def test_record_fills_every_field_and_chains(users):
    seq0 = last_seq()
    prev = AuditEntry.objects.filter(seq=seq0).values_list("entry_hash", flat=True).first() or GENESIS_HASH
    params = {"radius_m": 500.0, "名称": "桥东区", "codes": ("999001", "999002"), "n": 3, "big": 1e20,
              "nan": float("nan"), "nested": {"b": [1, 2.5], "a": None}}
    e = audit.record("coverage", user=users["admin"], object_type="layers.Job", object_id=42, summary="测试",
                     params=params, result={"share": 0.75, "grids": [1, 2]})
    got = AuditEntry.objects.get(pk=e.pk)
    assert got.seq == seq0 + 1 and got.prev_hash == prev
    assert (got.user_id, got.username, got.action, got.status) == (users["admin"].pk, "999_admin", "coverage", "ok")
    assert (got.object_type, got.object_id) == ("layers.Job", "42")
    assert got.params["codes"] == ["999001", "999002"] and got.params["nan"] == "nan"
    assert got.result_digest == sha256_json({"share": 0.75, "grids": [1, 2]})
    # the hash is sha256(prev + "\n" + canonical fields), recomputed here from the row as read back
    fields = got.hashed_fields()
    assert fields["created_at"].endswith("+00:00") and fields["seq"] == got.seq
    want = hashlib.sha256((prev + "\n" + canonical_json(fields)).encode("utf-8")).hexdigest()
    assert got.entry_hash == want == e.entry_hash
    assert audit.verify_chain() is None


def test_the_orm_refuses_to_change_or_delete_entries(users):
    e = audit.record("export", user=users["planner"], summary="原始", params={"format": "csv"}, result=b"abc")
    assert e.result_digest == hashlib.sha256(b"abc").hexdigest()
    stored = AuditEntry.objects.filter(pk=e.pk).values().get()
    e.summary = "改过"
    with pytest.raises(ValidationError):
        e.save()
    with pytest.raises(ValidationError):
        e.save(update_fields=["summary"])
    with pytest.raises(ValidationError):
        e.delete()
    with pytest.raises(ValidationError):
        AuditEntry.objects.filter(pk=e.pk).update(summary="改过")
    with pytest.raises(ValidationError):
        AuditEntry.objects.filter(pk=e.pk).delete()
    with pytest.raises(ValidationError):
        AuditEntry.objects.all().delete()
    with pytest.raises(ValidationError):
        AuditEntry.objects.bulk_update([e], ["summary"])
    with pytest.raises(ValidationError):  # a row that bypasses record() (no place in the chain)
        AuditEntry.objects.create(seq=10 ** 9, action="export", prev_hash="x", entry_hash="y")
    with pytest.raises(ValidationError):
        AuditEntry.objects.bulk_create([AuditEntry(seq=10 ** 9, action="export", prev_hash="x", entry_hash="y")])
    assert AuditEntry.objects.filter(pk=e.pk).values().get() == stored
    with pytest.raises(ValueError):
        audit.record("drop_table")


def test_deleting_a_user_keeps_the_entry_and_the_chain(users):
    u = get_user_model().objects.create_user("999_gone", password="x")
    e = audit.record("import", user=u, summary="导入")
    u.delete()  # SET_NULL goes through the base manager: allowed, and user_id is not hashed
    got = AuditEntry.objects.get(pk=e.pk)
    assert got.user_id is None and got.username == "999_gone"
    assert audit.verify_chain() is None


def test_an_entry_without_a_user_names_the_system_account():
    e = audit.record("export", summary="命令行")
    assert e.username == "" and "@" in e.params["_os_user"]


# ------------------------------------------------------------------ the chain
def test_verify_chain_detects_a_changed_row():
    es = [audit.record("export", summary=f"第{i}条", params={"i": i}) for i in range(3)]
    assert audit.verify_chain() is None
    tamper("UPDATE {table} SET summary = %s WHERE id = %s", ["被改过", es[1].pk])
    broken = audit.verify_chain()
    assert broken is not None and broken.pk == es[1].pk and broken.chain_error == "entry_hash"


def test_verify_chain_detects_changed_params_and_a_forged_hash():
    es = [audit.record("siting", params={"p": i}) for i in range(3)]
    forged = AuditEntry(**{f.attname: getattr(es[1], f.attname) for f in AuditEntry._meta.fields})
    forged.params = {"p": 99}
    new_hash = forged.compute_hash()  # a forger who recomputes this row's hash ...
    tamper("UPDATE {table} SET params = %s, entry_hash = %s WHERE id = %s",
           [json.dumps({"p": 99}), new_hash, es[1].pk])
    broken = audit.verify_chain()  # ... breaks the next row's link
    assert broken is not None and broken.pk == es[2].pk and broken.chain_error == "prev_hash"


def test_verify_chain_detects_a_removed_row():
    es = [audit.record("coverage", params={"i": i}) for i in range(3)]
    tamper("DELETE FROM {table} WHERE id = %s", [es[1].pk])
    broken = audit.verify_chain()
    assert broken is not None and broken.pk == es[2].pk and broken.chain_error == "seq"


# ------------------------------------------------------------------ what is recorded, once each
def test_import_layer_command_is_recorded_once(users):
    path = FORMATS / "districts_wgs84.geojson"
    seq = last_seq()
    call_command("import_layer", "districts", str(path), "--json", stdout=io.StringIO())
    e = one_since(seq)
    run = ImportRun.objects.get(pk=int(e.object_id))
    assert (e.action, e.status, e.object_type) == ("import", "ok", "importers.ImportRun")
    assert e.params["kind"] == "districts" and e.params["file_name"] == path.name
    assert e.params["sha256"] == sha256_file(path) == run.sha256
    assert e.result_digest == sha256_json({"status": "ok", "features_read": 2, "created": 2, "updated": 0,
                                           "deleted": 0, "error_count": 0})
    assert e.username == "" and e.params["_os_user"]


def test_refused_import_is_recorded_as_failed():
    seq = last_seq()
    with pytest.raises(SystemExit):
        call_command("import_layer", "districts", str(FORMATS / "facilities.csv"), stderr=io.StringIO())
    e = one_since(seq)
    assert (e.action, e.status) == ("import", "failed") and e.params["file_name"] == "facilities.csv"


def test_coverage_command_is_recorded_once(demo):
    seq = last_seq()
    out = io.StringIO()
    call_command("coverage", "fire_stations", "--radius-m", "500", "--demand", "grids", "--json", stdout=out)
    doc = json.loads(out.getvalue())
    e = one_since(seq)
    job = models.Job.objects.get(pk=doc["job_id"])
    assert (e.action, e.status, e.object_type, e.object_id) == ("coverage", "ok", "layers.Job", str(job.pk))
    assert e.params["radius_m"] == 500 and e.params["kind"] == "fire_stations" and e.params["job_id"] == job.pk
    assert e.params["data_version"] == job.data_version
    assert e.result_digest == sha256_json(job.result)


def test_site_command_is_recorded_once(demo):
    com = models.Community.objects.filter(grids__population__gt=0).order_by("code").first()
    seq = last_seq()
    out = io.StringIO()
    call_command("site", "fire_stations", "--objective", "mclp", "--p", "1", "--radius-m", "500",
                 "--area", com.code, "--json", stdout=out, stderr=io.StringIO())
    doc = json.loads(out.getvalue())
    e = one_since(seq)
    job = models.Job.objects.get(pk=doc["job_id"])
    assert (e.action, e.status, e.object_id) == ("siting", "ok", str(job.pk))
    assert e.params["p"] == 1 and e.params["objective"] == "mclp" and e.params["area"] == [com.code]
    assert e.result_digest == sha256_json(job.result)


def test_coverage_job_of_a_user_is_recorded_once_with_the_user(users, demo):
    job = tasks.job_queue(models.Job.Kind.COVERAGE, {"kind": "fire_stations", "demand": "grids",
                                                     "radius_m": 500.0}, user=users["emergency_official"])
    seq = last_seq()
    assert tasks.coverage_job.call(job.pk) == "done"
    e = one_since(seq)
    assert (e.action, e.user_id, e.username) == ("coverage", users["emergency_official"].pk, "999_emergency_official")
    job.refresh_from_db()
    services.job_finish(job, result=job.result)  # finishing again does not record twice
    assert entries_since(seq) == [e]


def test_failed_and_cancelled_jobs_are_recorded_with_their_status(users):
    seq = last_seq()
    bad = tasks.job_queue(models.Job.Kind.COVERAGE, {"kind": "nothing", "radius_m": 500.0}, user=users["admin"])
    assert tasks.coverage_job.call(bad.pk) == "failed"
    queued = tasks.job_queue(models.Job.Kind.EXPORT, {"layer": "communities", "format": "csv"}, user=users["admin"])
    services.job_finish(queued, cancelled=True)  # cancelled while queued (the API's cancel)
    new = entries_since(seq)
    assert [(e.action, e.status, e.object_id) for e in new] == [
        ("coverage", "failed", str(bad.pk)), ("export", "cancelled", str(queued.pk))]


def test_export_grids_command_is_recorded_once_with_the_file_digest(users, demo, tmp_path):
    services.demo_users_create()
    com = models.Community.objects.filter(is_sample=True, grids__isnull=False).order_by("code").first()
    out = tmp_path / "grids.geojson"
    seq = last_seq()
    call_command("export_grids", "--format", "geojson", "--out", str(out), "--community", com.code,
                 "--user", users["admin"].username, "-v", "0", stdout=io.StringIO())
    e = one_since(seq)
    assert (e.action, e.status, e.object_type, e.username) == ("export", "ok", "export", "999_admin")
    assert e.params["fmt"] == "geojson" and e.params["community"] == com.code and e.params["layer"] == "grids"
    assert e.params["out"] == "grids.geojson"  # the file name, never the server's path
    assert e.result_digest == sha256_file(out)


def test_export_layer_command_and_refused_export_are_recorded(tmp_path):
    out = tmp_path / "c.csv"
    seq = last_seq()
    call_command("export_layer", "communities", "--format", "csv", "--out", str(out), stdout=io.StringIO())
    e = one_since(seq)
    assert (e.action, e.status, e.params["kind"], e.params["fmt"]) == ("export", "ok", "communities", "csv")
    assert e.result_digest == sha256_file(out)
    seq = last_seq()
    with pytest.raises(exports.ExportProblem):
        exports.export_layer("communities", "docx", tmp_path / "x.docx")
    e = one_since(seq)
    assert (e.action, e.status, e.result_digest) == ("export", "failed", "")


def test_export_job_is_recorded_once_as_its_job(users):
    job = tasks.job_queue(models.Job.Kind.EXPORT, {"layer": "communities", "format": "csv"},
                          user=users["planner"])
    seq = last_seq()
    assert tasks.export_job.call(job.pk) == "done"
    e = one_since(seq)  # the service's own wrapper stays silent inside the Job
    job.refresh_from_db()
    assert (e.action, e.object_type, e.object_id, e.username) == ("export", "layers.Job", str(job.pk), "999_planner")
    with job.result_file.open("rb") as fh:
        assert e.result_digest == hashlib.sha256(fh.read()).hexdigest()
    assert e.params["layer"] == "communities" and e.params["format"] == "csv"


def test_import_job_is_recorded_once_as_its_job(users, settings):
    upload = Path(settings.MEDIA_ROOT) / "uploads" / "999audit" / "districts_wgs84.geojson"
    upload.parent.mkdir(parents=True, exist_ok=True)
    upload.write_bytes((FORMATS / "districts_wgs84.geojson").read_bytes())
    job = tasks.job_queue(models.Job.Kind.IMPORT, {"kind": "districts", "upload": "uploads/999audit/"
                                                   "districts_wgs84.geojson", "file_name": "d.geojson"},
                          user=users["admin"])
    seq = last_seq()
    assert tasks.import_job.call(job.pk) == "done"
    e = one_since(seq)  # import_file's own wrapper stays silent inside the Job
    job.refresh_from_db()
    assert (e.action, e.status, e.object_type, e.object_id, e.username) == (
        "import", "ok", "layers.Job", str(job.pk), "999_admin")
    assert e.params["sha256"] == sha256_file(FORMATS / "districts_wgs84.geojson")
    assert ImportRun.objects.filter(pk=e.params["import_run_id"], status="ok").exists()
    assert e.result_digest == sha256_json(job.result)


def test_dry_run_imports_are_not_recorded():
    seq = last_seq()
    call_command("import_layer", "districts", str(FORMATS / "districts_wgs84.geojson"), "--dry-run",
                 stdout=io.StringIO())
    assert entries_since(seq) == []


def _submission():
    return services_review.parse_submission((REVIEW / "good_qiaodong.geojson").read_bytes())


def test_review_submission_and_decisions_are_recorded_once_each(users, demo):
    planner, admin = users["planner"], users["admin"]
    sub = _submission()
    seq = last_seq()
    project = services_review.save_review(sub, services_review.review_submission(sub), user=planner)
    report = project.reports.get()
    # the page adds the "submitted" history row: still one submission entry
    ReviewDecision.objects.create(project=project, report=report, action="submitted", user=planner)
    e = one_since(seq)
    assert (e.action, e.object_type, e.object_id, e.username) == ("review_submit", "layers.ReviewReport",
                                                                  str(report.pk), "999_planner")
    assert e.params["project_id"] == project.pk and e.params["verdict"] == report.verdict
    assert e.result_digest == sha256_json(report.checks)

    seq = last_seq()
    d = services_decisions.review_decide(project, action="comment", comment="请补充", user=admin)
    e = one_since(seq)
    assert (e.action, e.object_type, e.object_id, e.username) == ("review_decision", "layers.ReviewDecision",
                                                                  str(d.pk), "999_admin")
    assert e.params["action"] == "comment" and e.params["project_id"] == project.pk
    assert e.result_digest == sha256_json({"project_id": project.pk, "report_id": report.pk,
                                           "action": "comment", "comment": "请补充", "check_comments": {}})

    # the decide page (the review decide path of the site)
    project.refresh_from_db()
    c = Client()
    c.force_login(admin)
    seq = last_seq()
    resp = c.post(f"/review/projects/{project.pk}/decide/",
                  {"action": "approved", "comment": "同意", "version": project.version})
    assert resp.status_code == 302
    e = one_since(seq)
    assert (e.action, e.username, e.params["action"], e.params["comment"]) == (
        "review_decision", "999_admin", "approved", "同意")


def test_a_resubmission_is_recorded_once_by_its_decision(users, demo):
    planner = users["planner"]
    sub = _submission()
    project = services_review.save_review(sub, services_review.review_submission(sub), user=planner)
    other = get_user_model().objects.create_user("999_planner2", password="x")
    seq = last_seq()
    report = ReviewReport.objects.create(project=project, rule_set="r", verdict="pass", checks={"checks": []})
    ReviewDecision.objects.create(project=project, report=report, action="submitted", user=other,
                                  comment="重新提交")
    e = one_since(seq)
    assert (e.action, e.object_type, e.object_id, e.username) == ("review_submit", "layers.ReviewReport",
                                                                  str(report.pk), "999_planner2")


# ------------------------------------------------------------------ the admin and the page
def test_admin_shows_but_cannot_change_or_delete(users):
    e = audit.record("export", user=users["planner"], summary="原始")
    stored = AuditEntry.objects.filter(pk=e.pk).values().get()
    c = Client()
    c.force_login(users["admin"])
    base = "/admin/gisportal/auditentry/"
    assert c.get(base).status_code == 200
    assert c.get(f"{base}{e.pk}/change/").status_code == 200  # view only
    assert c.post(f"{base}{e.pk}/change/", {"summary": "改过", "status": "failed"}).status_code == 403
    assert c.get(f"{base}{e.pk}/delete/").status_code == 403
    assert c.post(f"{base}{e.pk}/delete/", {"post": "yes"}).status_code == 403
    assert c.get(f"{base}add/").status_code == 403
    assert c.post(base, {"action": "delete_selected", "_selected_action": [e.pk], "post": "yes"}).status_code in (
        200, 302, 403)
    assert AuditEntry.objects.filter(pk=e.pk).values().get() == stored
    planner = Client()
    planner.force_login(users["planner"])
    assert planner.get(base).status_code in (302, 403)


def test_audit_page_for_admins_with_filters_and_chain_state(users):
    a = audit.record("export", user=users["planner"], summary="导出甲", params={"format": "csv"})
    audit.record("coverage", user=users["admin"], summary="覆盖乙", status="failed")
    c = Client()
    assert c.get("/audit/").status_code == 302
    c.force_login(users["planner"])
    assert c.get("/audit/").status_code == 403
    c.force_login(users["admin"])
    html = c.get("/audit/").content.decode()
    assert 'id="audit-chain" data-ok="1"' in html and "导出甲" in html and "覆盖乙" in html
    assert 'href="/audit/"' in html  # the nav link, for admins
    html = c.get("/audit/", {"action": "export", "user": "999_planner"}).content.decode()
    assert "导出甲" in html and "覆盖乙" not in html
    html = c.get("/audit/", {"status": "failed"}).content.decode()
    assert "覆盖乙" in html and "导出甲" not in html
    today = timezone.localdate()
    html = c.get("/audit/", {"date_from": today.isoformat(), "date_to": today.isoformat()}).content.decode()
    assert "导出甲" in html
    html = c.get("/audit/", {"date_to": "2000-01-01"}).content.decode()
    assert "导出甲" not in html
    tamper("UPDATE {table} SET summary = %s WHERE id = %s", ["导出丙", a.pk])
    html = c.get("/audit/").content.decode()
    assert 'id="audit-chain" data-ok="0"' in html and f'data-seq="{a.seq}"' in html
    c.force_login(users["planner"])
    assert 'href="/audit/"' not in c.get("/").content.decode()


# ------------------------------------------------------------------ concurrent appends (own database)
PARALLEL = SEED + r"""
import json, threading
from django.db import connection
from gisportal import audit
from gisportal.models import AuditEntry
THREADS, EACH = 4, 20
barrier = threading.Barrier(THREADS)
errors = []
def go(t):
    try:
        barrier.wait()
        for i in range(EACH):
            audit.record("export", user=admin, summary=f"t{t}-{i}", params={"t": t, "i": i})
    except Exception as exc:
        errors.append(repr(exc)[:300])
    finally:
        connection.close()
ts = [threading.Thread(target=go, args=(t,)) for t in range(THREADS)]
[t.start() for t in ts]
[t.join() for t in ts]
broken = audit.verify_chain()
seqs = list(AuditEntry.objects.order_by("seq").values_list("seq", flat=True))
mine = sorted(AuditEntry.objects.filter(summary__startswith="t").values_list("summary", flat=True))
print("PARALLEL" + json.dumps({"errors": errors, "broken": None if broken is None else broken.seq,
                               "retries": audit.append_retries,
                               "seqs": seqs, "mine": mine}))
"""


@pytest.mark.slow
def test_parallel_appends_keep_one_unbroken_chain(scratch_db):
    out = scratch_db.shell(PARALLEL, timeout=300)
    doc = json.loads(next(line for line in out.splitlines() if line.startswith("PARALLEL"))[8:])
    assert doc["errors"] == []
    assert doc["broken"] is None
    assert doc["seqs"] == list(range(1, len(doc["seqs"]) + 1))
    assert doc["mine"] == sorted(f"t{t}-{i}" for t in range(4) for i in range(20))
    count(f"audit_parallel_appends_{backend()}", len(doc["mine"]))
    count(f"audit_append_retries_{backend()}", doc["retries"])

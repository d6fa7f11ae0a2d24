"""The records: the filtered list (as a page, CSV and JSON), one record, its
review, queuing failed ones again, deleting a record or a whole batch, and the
reviewed images as a dataset."""

from __future__ import annotations

import tempfile
from math import ceil

from flask import (
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from flask_login import current_user

from core import deletion
from core.db import Prediction
from core.lifecycle.requeue import retry_failed as requeue_failed
from core.lifecycle.status import Status
from frontend import dataset, queries
from frontend.admin import bp
from frontend.downloads import csv_attachment
from frontend.forms import DeleteForm, RetryForm, ReviewForm
from frontend.predictions import csv_cell, record_json
from frontend.services import services

MAX_PAGE = 10**6
CSV_COLUMNS = ["id", "created_at", "source", "filename", "status", "label", "confidence",
               "model_version", "seconds", "correct", "true_label", "error"]


@bp.get("/")
def records():
    flt, page = request_filter(), _page()
    with services().db.session() as db:
        rows, total = queries.records(db, flt, page)
        labels, versions = queries.labels(db), queries.versions(db)
        only_failed = flt.failed()
        failed = queries.count(db, only_failed) if only_failed else 0
    return render_template("admin/records.html", rows=rows, total=total, page=page,
                           pages=max(1, ceil(total / queries.PAGE_SIZE)), flt=flt,
                           labels=labels, versions=versions, failed=failed,
                           retry_form=RetryForm())


@bp.get("/records.csv")
def records_csv():
    flt = request_filter()
    with services().db.session() as db:
        return csv_attachment("records.csv", CSV_COLUMNS,
                              map(_csv_row, queries.all_records(db, flt)))


@bp.get("/api/records")
def api_records():
    flt, page = request_filter(), _page()
    with services().db.session() as db:
        rows, total = queries.records(db, flt, page)
    return jsonify(total=total, page=page, page_size=queries.PAGE_SIZE,
                   records=[record_json(p, uncertain_below=services().settings.uncertain_below)
                            for p in rows])


@bp.get("/records/<prediction_id>")
def record(prediction_id: str):
    p = _record(prediction_id)
    form = ReviewForm(verdict=("right" if p.correct else "wrong") if p.correct is not None
                      else None, true_label=p.true_label)
    return render_template("admin/record.html", p=p, form=form, retry_form=RetryForm(),
                           delete_form=DeleteForm())


@bp.post("/records/<prediction_id>/review")
def review(prediction_id: str):
    form = ReviewForm()
    p = _record(prediction_id)
    if p.label is None:
        abort(409, "only finished predictions with a label can be reviewed")
    if not form.validate_on_submit():
        return render_template("admin/record.html", p=p, form=form, retry_form=RetryForm(),
                               delete_form=DeleteForm()), 400
    with services().db.session() as db:
        row = queries.save_review(db, prediction_id, right=form.verdict.data == "right",
                                  true_label=form.true_label.data,
                                  reviewer=current_user.username)
    flash(f"marked {'right' if row.correct else 'wrong'}: {row.true_label}")
    return redirect(url_for("admin.record", prediction_id=prediction_id), 303)


@bp.post("/records/<prediction_id>/retry")
def retry(prediction_id: str):
    """A failed record (Serving was down past the retry budget, say) queued again."""
    p = _record(prediction_id)
    if not RetryForm().validate_on_submit():
        abort(400, "the retry form expired; reload the page")
    if p.status != Status.FAILED:
        abort(409, f"only failed records can be retried; this one is {p.status}")
    if requeue_failed(services(), [prediction_id]):
        flash("queued again")
    return redirect(url_for("admin.record", prediction_id=prediction_id), 303)


@bp.post("/records/retry-failed")
def retry_failed():
    """Every failed record the list's filters select, queued again."""
    flt = request_filter()
    if not RetryForm().validate_on_submit():
        abort(400, "the retry form expired; reload the page")
    with services().db.session() as db:
        ids = queries.failed_ids(db, flt)
    count = requeue_failed(services(), ids) if ids else 0  # it waits for the sweep's lock
    flash(f"{count} failed record{'s' if count != 1 else ''} queued again")
    return redirect(url_for("admin.records", **flt.query_args()), 303)


@bp.post("/records/<prediction_id>/delete")
def delete_record(prediction_id: str):
    """The record, its image and thumbnail (unless another record shares them);
    a run that learnt from the photo gets it noted in its manifest."""
    if not DeleteForm().validate_on_submit():
        abort(400, "the delete form expired; reload the page")
    done = deletion.delete_predictions(services(), [prediction_id], visitor=deletion.ANYONE,
                                       reason=deletion.by_admin(current_user.username))
    if not done.records:
        abort(404, f"no record {prediction_id}")
    flash(f"deleted record {prediction_id}")
    return redirect(url_for("admin.records"), 303)


@bp.post("/batches/<batch_id>/delete")
def delete_batch(batch_id: str):
    if not DeleteForm().validate_on_submit():
        abort(400, "the delete form expired; reload the page")
    done = deletion.delete_batch(services(), batch_id, visitor=deletion.ANYONE,
                                 reason=deletion.by_admin(current_user.username))
    if done is None:
        abort(404, f"no batch {batch_id}")
    flash(f"deleted batch {batch_id}: {done.records} record{'s' if done.records != 1 else ''}")
    return redirect(url_for("admin.records"), 303)


@bp.get("/review/export.zip")
def review_export():
    """Reviewed images as dataset/<true label>/<file>: the next training run's data."""
    svc = services()
    # On disk: thousands of photos do not fit in memory. send_file closes it.
    out = tempfile.TemporaryFile()  # noqa: SIM115
    if not dataset.write_zip(out, db=svc.db, store=svc.store):
        out.close()
        abort(404, "no reviewed images yet: review some records first")
    out.seek(0)
    return send_file(out, mimetype="application/zip", as_attachment=True,
                     download_name="reviewed-dataset.zip")


def request_filter() -> queries.RecordFilter:
    try:
        return queries.RecordFilter.parse(
            request.args, uncertain_below=services().settings.uncertain_below)
    except queries.FilterError as exc:
        abort(400, str(exc))


def _page() -> int:
    raw = request.args.get("page", "1")
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_PAGE):
        abort(400, f"page must be a whole number from 1 to {MAX_PAGE}")
    return int(raw)


def _csv_row(p: Prediction) -> list:
    return [p.id, p.created_at.isoformat(), p.source, csv_cell(p.filename), p.status,
            p.label or "", "" if p.confidence is None else f"{p.confidence:.4f}",
            p.model_version or "", "" if p.seconds is None else f"{p.seconds:.3f}",
            "" if p.correct is None else p.correct, csv_cell(p.true_label or ""), p.error or ""]


def _record(prediction_id: str) -> Prediction:
    with services().db.session() as db:
        p = db.get(Prediction, prediction_id)
    if p is None:
        abort(404, f"no record {prediction_id}")
    return p

"""The review queue page: one photo at a time, a key per class, Enter to confirm.

The page is a shell; its script (static/review.js) reads the queue from
/admin/api/review-queue with the page's filters and sends each review to
/admin/api/predictions/<id>/review, so the next photo needs no page load.
"""

from __future__ import annotations

from flask import abort, render_template, request, url_for

from frontend import queries
from frontend.admin import bp
from frontend.services import services


def queue_filter() -> queries.RecordFilter:
    """The records page's filters, unreviewed records only unless `reviewed` is given
    (an empty `reviewed` asks for every record)."""
    args = request.args.copy()
    args.setdefault("reviewed", "no")
    try:
        return queries.RecordFilter.parse(args, uncertain_below=services().settings.uncertain_below)
    except queries.FilterError as exc:
        abort(400, str(exc))


@bp.get("/review")
def review_queue():
    flt = queue_filter()
    with services().db.session() as db:
        labels, versions = queries.labels(db), queries.versions(db)
    return render_template("admin/review.html", flt=flt, labels=labels, versions=versions,
                           queue_url=url_for("admin.api.review_queue",
                                             **(flt.query_args() | {"reviewed": flt.reviewed})))

"""Scoring an exported version on any labelled folder, through its serving
signature: what is measured is exactly what TF Serving would answer."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from trainer import data, export, report
from trainer.errors import DatasetError, ModelError


def evaluate(version_dir: Path, data_dir: Path, out_dir: Path | None = None) -> tuple[dict, Path]:
    """Metrics of `version_dir` on `data_dir`, written to `out_dir` (by default
    `<model>/reports/<version>/evaluations/<data folder>-<time>/`)."""
    version_dir = Path(version_dir)
    if not (version_dir / "saved_model.pb").is_file():
        raise ModelError(f"{version_dir} is not an exported version (no saved_model.pb): give "
                         "a folder like models/<name>/<version>")
    found = data.scan(data_dir)
    if not found.examples:
        raise DatasetError(f"data set folder {data_dir} has no readable images")
    images = [e.path.read_bytes() for e in found.examples]
    scores, model_classes = export.predict_bytes(version_dir, images)
    unknown = sorted(set(found.class_names) - set(model_classes))
    if unknown:
        raise DatasetError(f"class folder(s) {', '.join(unknown)} are not classes of this model "
                           f"({', '.join(model_classes)}): rename or remove them")
    labels = np.array([model_classes.index(found.class_names[e.label]) for e in found.examples])
    metrics = {
        "model": str(version_dir),
        "data": {"root": str(found.root), "fingerprint": found.fingerprint(),
                 "images_per_class": found.counts(), "images": len(found.examples),
                 "bad_files_skipped": [str(b.path) for b in found.bad_files]},
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "class_names": model_classes,
        **report.scores_summary(labels, scores),
        **report.per_class(labels, scores, model_classes),
    }
    if out_dir is None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        out_dir = (version_dir.parent / "reports" / version_dir.name / "evaluations"
                   / f"{found.root.name}-{stamp}")
    out_dir.mkdir(parents=True, exist_ok=True)
    report.write_metrics(out_dir, metrics)
    report.plot_confusion(metrics["confusion_matrix"], model_classes,
                          out_dir / "confusion_matrix.png",
                          title=f"{version_dir}: {found.root.name}")
    return metrics, out_dir

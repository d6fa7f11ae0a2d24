"""What a version learned: metrics.json, split lists, plots, a summary table."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    ConfusionMatrixDisplay,
    accuracy_score,
    confusion_matrix,
    log_loss,
    precision_recall_fscore_support,
)

from core.rollout import drift  # noqa: E402
from trainer.data import Example, Scan, file_sha256  # noqa: E402


def scores_summary(labels: Sequence[int], scores: np.ndarray) -> dict[str, float]:
    """Accuracy and cross-entropy loss of class probabilities against true labels."""
    classes = list(range(scores.shape[1]))
    scores = scores / scores.sum(axis=1, keepdims=True)  # int8 TFLite rounds the softmax
    return {
        "accuracy": float(accuracy_score(labels, scores.argmax(axis=1))),
        "loss": float(log_loss(labels, scores, labels=classes)),
    }


def per_class(labels: Sequence[int], scores: np.ndarray,
              class_names: Sequence[str]) -> dict[str, object]:
    """Precision/recall/F1/support per class and the confusion matrix (rows: truth)."""
    classes = list(range(len(class_names)))
    predicted = scores.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=classes, zero_division=0)
    return {
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]),
                   "f1": float(f1[i]), "support": int(support[i])}
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": confusion_matrix(labels, predicted, labels=classes).tolist(),
    }


def reference(scores: np.ndarray, class_names: Sequence[str]) -> dict[str, object]:
    """metrics.json's "reference": the class mix and top-score mix of these (calibrated,
    so Serving's) scores, which the site's drift check compares recent answers with."""
    return drift.reference(class_names, [class_names[i] for i in scores.argmax(axis=1)],
                           scores.max(axis=1).tolist())


def plot_curves(history: dict[str, list[float]], path: Path, *, fine_tune_from: int | None) -> None:
    """Loss and accuracy per epoch, train against validation."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        epochs = range(1, len(history[metric]) + 1)
        ax.plot(epochs, history[metric], label="train")
        ax.plot(epochs, history[f"val_{metric}"], label="validation")
        if fine_tune_from:
            ax.axvline(fine_tune_from + 0.5, color="gray", linestyle="--", label="fine-tuning")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(matrix: list[list[int]], class_names: Sequence[str], path: Path,
                   title: str) -> None:
    fig, ax = plt.subplots(figsize=(1.2 * len(class_names) + 3, 1.2 * len(class_names) + 2))
    ConfusionMatrixDisplay(np.array(matrix), display_labels=class_names).plot(
        ax=ax, cmap="Blues", colorbar=False, xticks_rotation=45)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_split(report_dir: Path, root: Path, parts: dict[str, Sequence[Example]],
                class_names: Sequence[str]) -> None:
    """One `<part>.txt` per split: `class<TAB>path relative to the data set`."""
    for part, examples in parts.items():
        lines = [f"{class_names[e.label]}\t{e.path.relative_to(root)}" for e in examples]
        (report_dir / f"{part}.txt").write_text("\n".join(lines) + "\n")


def write_metrics(report_dir: Path, metrics: dict) -> Path:
    return write_json(report_dir / "metrics.json", metrics)


def write_json(path: Path, content: dict) -> Path:
    path.write_text(json.dumps(content, indent=2) + "\n")
    return path


def manifest(found: Scan, extra: Sequence[Example]) -> dict:
    """Every photo a version learnt from (manifest.json). Reviewed photos live
    in the image store under their hash, so they are listed by content."""
    names = found.class_names
    return {
        "base": [{"path": str(e.path.relative_to(found.root)), "sha256": file_sha256(e.path),
                  "label": names[e.label]} for e in sorted(found.examples, key=lambda e: e.path)],
        "reviewed": [{"sha256": file_sha256(e.path), "label": names[e.label]} for e in extra],
    }


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    """A plain aligned text table for the terminal."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"

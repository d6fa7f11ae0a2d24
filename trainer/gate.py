"""The gate a candidate passes before it takes traffic.

Two sets of photos decide, each scored by the candidate and by the version
Serving answers with now:

- the reviewed photos. The candidate learnt from all of them, so its figure is
  cross-validated: FOLDS heads of the candidate's recipe, each trained on the
  base photos and the reviewed photos outside one fold, score that fold (the
  base features are cached, so a fold costs a head's training, seconds). The
  serving version is asked through Serving's REST API, as users' photos are;
  if it learnt from some of them (an earlier run did), its figure flatters it,
  which only makes the gate stricter.
- the base test split, which no version learns from.

The candidate is promoted only if it is not worse than the serving version on
either by more than `margin` (a share of the photos). With no version serving
there is nothing to be worse than, and it is promoted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold

from core.serving_client import ServingClient, ServingRequestError
from trainer.fit import fit_head
from trainer.model import build_head

#: Folds of the cross-validation over the reviewed photos: few, because each
#: trains a head while an administrator waits.
FOLDS = 3


@dataclass(frozen=True)
class Verdict:
    promote: bool
    reason: str
    figures: dict  # the JSON stored on the run and shown on the models page


def figures(truth: Sequence[str], predicted: Sequence[str], class_names: Sequence[str]) -> dict:
    """Accuracy overall and per true class (classes without photos left out)."""
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    per_class = {}
    for name in class_names:
        mine = truth == name
        if mine.any():
            per_class[name] = {"accuracy": float((predicted[mine] == name).mean()),
                               "images": int(mine.sum())}
    accuracy = float((truth == predicted).mean()) if len(truth) else None
    return {"accuracy": accuracy, "per_class": per_class}


def folds(labels: Sequence[int], seed: int) -> list[np.ndarray]:
    """Held-out index sets over the reviewed photos: stratified when every class
    has a photo for every fold, plainly shuffled otherwise."""
    labels = np.asarray(labels)
    n = min(FOLDS, len(labels))
    if n < 2:
        return [np.arange(len(labels))]
    counts = np.bincount(labels)
    if counts[counts > 0].min() >= n:
        splitter = StratifiedKFold(n, shuffle=True, random_state=seed)
    else:
        splitter = KFold(n, shuffle=True, random_state=seed)
    return [held for _, held in splitter.split(np.zeros(len(labels)), labels)]


def cross_validate(train_x: np.ndarray, train_y: np.ndarray, owners: np.ndarray,
                   reviewed_x: np.ndarray, reviewed_labels: Sequence[int], *,
                   num_classes: int, recipe, epochs: int, on_fold=None) -> np.ndarray:
    """Predicted class of each reviewed photo by a head that never saw it,
    trained as the candidate's head was: the same recipe, for the epochs early
    stopping gave the candidate.

    `train_x`/`train_y` are the candidate's whole training matrix (every view
    of every photo) and `owners` the index of the reviewed photo each row came
    from (-1 for base photos), so a fold drops all of a photo's views.
    """
    predicted = np.zeros(len(reviewed_labels), dtype=int)
    held_sets = folds(reviewed_labels, recipe.seed)
    for i, held in enumerate(held_sets):
        keep = ~np.isin(owners, held)
        head = build_head(num_classes, recipe.dropout, recipe.l2)
        fit_head(head, (train_x[keep], train_y[keep]), None, epochs=epochs,
                 learning_rate=recipe.learning_rate, patience=None,
                 batch_size=recipe.head_batch_size, seed=recipe.seed + i,
                 label_smoothing=recipe.label_smoothing)
        predicted[held] = head.predict(reviewed_x[held], verbose=0).argmax(axis=1)
        if on_fold:
            on_fold((i + 1) / len(held_sets))
    return predicted


def serving_answers(client: ServingClient, images: Sequence[bytes]
                    ) -> tuple[int | None, list[str] | None]:
    """The version Serving answers with now and its labels for `images`;
    (None, None) when no version is available."""
    try:
        available = [int(s["version"]) for s in client.status() if s.get("state") == "AVAILABLE"]
    except ServingRequestError as exc:
        if exc.status_code == 404:
            return None, None
        raise
    if not available:
        return None, None
    version = max(available)
    answers = client.classify(list(images), version=version)
    return version, [a.label for a in answers]


def decide(candidate: dict, serving: dict | None, margin: float) -> tuple[bool, str]:
    """Promote unless the candidate is worse by more than `margin` on either set."""
    if serving is None:
        return True, "no version is serving: nothing to compare with"
    worse = []
    for part, title in (("reviewed", "reviewed photos"), ("base_test", "base test split")):
        mine, theirs = candidate[part]["accuracy"], serving[part]["accuracy"]
        if mine is not None and theirs is not None and mine < theirs - margin:
            worse.append(f"{title} {mine:.1%} against {theirs:.1%}")
    if worse:
        return False, (f"worse than the serving version by more than {margin:.0%} on "
                       + " and on ".join(worse))
    return True, (f"not worse than the serving version by more than {margin:.0%} on the "
                  "reviewed photos and the base test split")


def verdict(*, class_names: Sequence[str], candidate_version: int,
            reviewed_truth: Sequence[str], reviewed_predicted: Sequence[str],
            test_truth: Sequence[str], test_predicted: Sequence[str],
            serving_version: int | None, serving_reviewed: Sequence[str] | None,
            serving_test: Sequence[str] | None, margin: float) -> Verdict:
    candidate = {"reviewed": figures(reviewed_truth, reviewed_predicted, class_names),
                 "base_test": figures(test_truth, test_predicted, class_names)}
    serving = None
    if serving_version is not None:
        serving = {"reviewed": figures(reviewed_truth, serving_reviewed, class_names),
                   "base_test": figures(test_truth, serving_test, class_names)}
    promote, reason = decide(candidate, serving, margin)
    return Verdict(promote, reason, {
        "decision": "promoted" if promote else "rejected",
        "reason": reason,
        "margin": margin,
        "method": (f"{min(FOLDS, len(reviewed_truth))}-fold cross-validation over "
                   f"{len(reviewed_truth)} reviewed photos; the base test split as it is"),
        "serving_version": serving_version,
        "candidate_version": candidate_version,
        **{part: {"images": len(truth), "candidate": candidate[part],
                  "serving": serving[part] if serving else None}
           for part, truth in (("reviewed", reviewed_truth), ("base_test", test_truth))},
    })

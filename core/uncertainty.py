"""When an answer counts as unsure, for the result page, the API and the review queue.

The trainer calibrates the scores (temperature scaling), so a top score of
0.6 means the model is right about 60% of the time on photos like its
validation split; under `Settings.uncertain_below` the answer is shown as a
question between the two best classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def margin(top_k: Sequence[dict[str, Any]]) -> float:
    """The best score minus the runner-up's (the best score when there is one class)."""
    scores = sorted((float(t["score"]) for t in top_k), reverse=True)
    if not scores:
        return 0.0
    return scores[0] - (scores[1] if len(scores) > 1 else 0.0)


def uncertain(confidence: float | None, threshold: float) -> bool:
    return confidence is not None and confidence < threshold


def alternatives(top_k: Sequence[dict[str, Any]], count: int = 2) -> list[str]:
    """The classes an unsure answer hesitates between, best first."""
    return [t["label"] for t in sorted(top_k, key=lambda t: -float(t["score"]))[:count]]


#: A gap between the two best scores under this counts as hesitation for the
#: review queue, even when the best score clears `Settings.uncertain_below`.
CLOSE_MARGIN = 0.2

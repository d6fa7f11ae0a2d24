"""Settings of safe roll-outs: how much traffic the shadow sees, and the evidence
and margins behind an automatic rollback (core/rollout/guard.py)."""

from __future__ import annotations

from dataclasses import dataclass

from core.settings.readers import env_fraction, env_int


@dataclass(frozen=True)
class RolloutSettings:
    #: Share of predictions also sent to the shadow version, when there is one.
    shadow_share: float
    #: Reviewed records each side (canary and stable, since the canary began)
    #: needs before their accuracies are compared.
    min_reviewed: int
    #: How many points of accuracy on reviewed records the canary may lose to
    #: stable; a bigger loss, shown by at least min_reviewed each, rolls it back.
    accuracy_margin: float
    #: Answered or failed predictions the canary needs before its failure rate counts.
    min_predictions: int
    #: How much more often the canary may fail than stable before it is rolled back.
    failure_margin: float
    #: The share a version passing the gate gets as canary, where an administrator
    #: opted in to automatic canaries on the models page.
    auto_canary_share: float
    #: Seconds between two checks of the canary by the workers.
    check_interval: int

    @classmethod
    def from_env(cls) -> RolloutSettings:
        return cls(
            shadow_share=env_fraction("SHADOW_SHARE", 0.5),
            min_reviewed=env_int("ROLLBACK_MIN_REVIEWED", 20),
            accuracy_margin=env_fraction("ROLLBACK_ACCURACY_MARGIN", 0.05),
            min_predictions=env_int("ROLLBACK_MIN_PREDICTIONS", 50),
            failure_margin=env_fraction("ROLLBACK_FAILURE_MARGIN", 0.05),
            auto_canary_share=env_fraction("AUTO_CANARY_SHARE", 0.1),
            check_interval=env_int("ROLLOUT_CHECK_INTERVAL", 10),
        )

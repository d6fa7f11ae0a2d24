"""The roll-out's rules without any process: the state an API body may ask for,
the routing by hashed ids, and the evidence the guard and the pages weigh."""

from __future__ import annotations

import random

import pytest
from scipy import stats

from core.rollout import monitor
from core.rollout.state import Mode, Role, RolloutError, State, bucket, parse, route, shadowed


def ids(count: int, seed: int = 7) -> list[str]:
    """Ids shaped like core.db.new_id's, from a fixed seed so the test is repeatable."""
    rng = random.Random(seed)
    return [rng.randbytes(12).hex() for _ in range(count)]


PINNED = {"mode": "pinned", "stable": 1, "canary": 2, "canary_share": 0.2, "shadow": 3}


def test_a_pinned_state_with_canary_and_shadow_is_read_as_sent():
    state = parse(PINNED)
    assert state == State(Mode.PINNED, 1, 2, 0.2, 3)
    assert state.as_json() == PINNED
    assert state.versions == {1, 2, 3}


def test_newest_is_the_default_and_names_no_version():
    assert parse({"mode": "newest"}) == State()
    assert State().as_json() == {"mode": "newest", "stable": None, "canary": None,
                                 "canary_share": 0.0, "shadow": None}


@pytest.mark.parametrize(("body", "message"), [
    (["pinned"], "JSON object"),
    ({"mode": "all"}, "mode must be"),
    ({"mode": "pinned"}, "needs a stable"),
    ({"mode": "newest", "stable": 1}, "takes no stable"),
    (PINNED | {"canary_share": 0.6}, "from 0.01 to 0.5"),
    (PINNED | {"canary_share": 0.001}, "from 0.01 to 0.5"),
    (PINNED | {"canary_share": "0.2"}, "must be a number"),
    (PINNED | {"canary_share": True}, "must be a number"),
    (PINNED | {"canary_share": float("nan")}, "must be a number"),
    (PINNED | {"canary": None}, "must be 0 without a canary"),
    (PINNED | {"stable": "1"}, "stable must be a version"),
    (PINNED | {"stable": -1}, "stable must be a version"),
    (PINNED | {"stable": 2**63}, "stable must be a version"),
    (PINNED | {"canary": 1.5}, "canary must be a version"),
    (PINNED | {"canary": 1}, "another version than stable"),
    (PINNED | {"shadow": 2}, "another version than stable and canary"),
    (PINNED | {"weights": {}}, "unknown fields: weights"),
])
def test_bad_states_are_refused_with_the_field_named(body, message):
    with pytest.raises(RolloutError, match=message):
        parse(body)


def test_a_record_always_goes_to_the_same_side():
    state = parse(PINNED)
    for prediction_id in ids(200):
        assert route(state, prediction_id, 9) == route(state, prediction_id, 9)


def test_newest_mode_answers_with_the_newest_version():
    assert route(State(), "abc", 42) == (42, Role.NEWEST)


def test_the_canary_gets_its_share_of_1000_predictions():
    """The observed count is what a binomial draw with the set share gives: the test
    fails if the hash favours either side (p < 0.001 would be 1 in 1,000 by chance;
    the ids are fixed, so the verdict is the same on every run)."""
    for share in (0.01, 0.1, 0.25, 0.5):
        state = State(Mode.PINNED, 1, 2, share)
        canary = sum(route(state, i, 9)[1] is Role.CANARY for i in ids(1000))
        assert stats.binomtest(canary, 1000, share).pvalue > 0.001, (share, canary)


def test_the_shadow_draw_is_independent_of_the_canary_draw():
    """The records the shadow sees are not the canary's or stable's only: a
    chi-squared test of independence on the 2x2 table of 1,000 ids."""
    state = State(Mode.PINNED, 1, 2, 0.5, 3)
    table = [[0, 0], [0, 0]]
    for prediction_id in ids(1000, seed=11):
        table[route(state, prediction_id, 9)[1] is Role.CANARY][
            shadowed(state, prediction_id, 0.5)] += 1
    assert stats.chi2_contingency(table).pvalue > 0.001, table


def test_buckets_are_uniform():
    values = [bucket(i, "canary") for i in ids(1000, seed=3)]
    assert stats.kstest(values, "uniform").pvalue > 0.001
    assert all(0 <= v < 1 for v in values)


def test_a_difference_resting_on_few_records_is_uncertain():
    few = monitor._difference(3, 5, 4, 5)      # 60% against 80%
    many = monitor._difference(300, 500, 400, 500)
    assert few.value == pytest.approx(many.value) == pytest.approx(-0.2)
    assert few.low < 0 < few.high            # could be either way
    assert many.high < 0                     # clearly behind
    assert (few.canary_n, many.stable_n) == (5, 500)


def test_a_side_without_errors_still_has_an_uncertainty():
    none_failed = monitor._difference(0, 10, 0, 10)
    assert none_failed.value == 0
    assert none_failed.low < 0 < none_failed.high


def test_nearest_rank_percentiles():
    values = [float(v) for v in range(1, 101)]
    assert monitor.percentile(values, 0.5) == 50
    assert monitor.percentile(values, 0.99) == 99
    assert monitor.percentile([], 0.5) is None

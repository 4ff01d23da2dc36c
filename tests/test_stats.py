"""Bootstrap intervals: they hold the true mean of a known distribution, shrink with more rows, and a paired
difference of identical scores is exactly zero."""

import numpy as np

from selfplay.stats import describe_change, mean_interval, paired_difference


def test_interval_holds_the_true_mean_and_shrinks_with_more_rows():
    rng = np.random.default_rng(7)
    covered, widths = 0, {}
    for n in (50, 800):
        for trial in range(40):
            values = rng.binomial(1, 0.3, size=n)  # a pass rate of 0.3
            mean, low, high = mean_interval(values, seed=trial)
            assert low <= mean <= high
            covered += low <= 0.3 <= high
            widths.setdefault(n, []).append(high - low)
    assert covered >= 0.85 * 80  # a 95% interval: misses are rare
    assert np.mean(widths[800]) < np.mean(widths[50]) / 3  # ~ 1/sqrt(n): 4x narrower at 16x the rows


def test_paired_difference_cancels_what_the_rows_share():
    rng = np.random.default_rng(0)
    position_difficulty = rng.uniform(0, 1, size=200)
    before = position_difficulty
    after = position_difficulty + 0.05  # every position a little better: unpaired, the spread would hide it
    mean, low, high = paired_difference(before, after)
    assert abs(mean - 0.05) < 1e-9 and low > 0
    assert describe_change(mean, low, high).startswith("+0.050")


def test_identical_scores_are_no_change():
    values = [0.1, 0.9, 0.5, 0.7]
    mean, low, high = paired_difference(values, values)
    assert mean == low == high == 0.0
    assert describe_change(mean, low, high) == "no change (within noise)"
    assert describe_change(0.02, -0.01, 0.05).startswith("no change")

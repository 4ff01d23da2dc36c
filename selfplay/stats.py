"""Noise on held-out figures: seeded bootstrap intervals over positions or tasks, paired for before -> after.

    mean_interval([0.2, 0.9, ...])               # -> (mean, low, high), a 95% percentile bootstrap interval
    paired_difference(before, after)             # -> (mean of after - before, low, high), rows resampled together
    describe_change(*paired_difference(b, a))    # -> "+0.081 [+0.03, +0.13]" or "no change (within noise)"

The bootstrap resamples rows (positions, tasks) with replacement, so an interval says how much the figure would move
on another held-out set of the same size from the same source. A before -> after difference resamples the same rows
for both (paired): the variation between positions cancels, and only the change is measured.
"""

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95
SEED = 0


def _interval(values: np.ndarray, seed: int) -> tuple[float, float, float]:
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(RESAMPLES, len(values)))].mean(axis=1)
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(values.mean()), float(low), float(high)


def mean_interval(values, *, seed: int = SEED) -> tuple[float, float, float]:
    """(mean, low, high): the mean and its 95% bootstrap interval over the rows."""
    return _interval(np.asarray(values, dtype=float), seed)


def paired_difference(before, after, *, seed: int = SEED) -> tuple[float, float, float]:
    """(mean of after - before, low, high) over rows scored both times, resampled in pairs."""
    before, after = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if before.shape != after.shape:
        raise ValueError(f"paired rows differ in number: {before.shape} vs {after.shape}")
    return _interval(after - before, seed)


def describe_change(mean: float, low: float, high: float) -> str:
    """The difference with its interval, or "no change (within noise)" when the interval holds 0."""
    return "no change (within noise)" if low <= 0 <= high else f"{mean:+.3f} [{low:+.2f}, {high:+.2f}]"

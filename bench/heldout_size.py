"""How many held-out code tasks a 10-point pass@1 change needs to stand outside the noise.

    python bench/heldout_size.py

Simulates, with the loop's own paired bootstrap (selfplay/stats.py), a base pass@1 of 21% (the default model on the
generated tasks) and a true gain of 10 points with churn (a fifth of the passed tasks lost, the rest gained among the
failed ones), 100 seeded trials per size: the mean half-width of the 95% interval, and how often it excludes 0.
"""

import numpy as np

from selfplay.stats import paired_difference

BASE, KEEP, TRIALS = 0.21, 0.8, 100
GAIN = (BASE + 0.10 - BASE * KEEP) / (1 - BASE)  # a failed task's chance to pass after: mean after = BASE + 0.10


def main() -> None:
    rng = np.random.default_rng(1)
    print("tasks  half-width  interval excludes 0")
    for n in (100, 200, 300):
        widths, excluded = [], 0
        for trial in range(TRIALS):
            before = rng.random(n) < BASE
            after = np.where(before, rng.random(n) < KEEP, rng.random(n) < GAIN)
            _, low, high = paired_difference(before, after, seed=trial)
            widths.append((high - low) / 2)
            excluded += low > 0
        print(f"{n:5d}  {np.mean(widths):10.3f}  {100 * excluded / TRIALS:5.0f}%")


if __name__ == "__main__":
    main()

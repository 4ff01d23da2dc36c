"""What a default chess run spends before vLLM starts: making its held-out and training rows.

    python bench/chess_rows.py

Times `eval_rows` + `train_rows` of the default `selfplay loop --domain chess` (100 random playouts and 100 mates in
one held out; 750 playouts and 250 mates in one to train on), with the generated mates made (an empty cache
directory: a machine's first run) and then read from the cache (every later run), in one process; checks that both
give the same rows. Writes bench/results/chess_rows.json.
"""

import json
import os
import tempfile
import time
from pathlib import Path

from selfplay.config import make_config
from selfplay.domains import get_domain
from selfplay.terminal import cpu_name

RESULTS = Path("bench/results/chess_rows.json")


def timed_rows(domain, config) -> tuple[float, list, list]:
    start = time.perf_counter()
    eval_rows = domain.eval_rows(config)
    rows = domain.train_rows(config, eval_rows)
    return time.perf_counter() - start, eval_rows, rows


def main() -> None:
    domain = get_domain("chess")
    config = make_config(domain="chess")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["SELFPLAY_CACHE"] = cache
        made, *made_rows = timed_rows(domain, config)
        cached, *cached_rows = timed_rows(domain, config)
    assert made_rows == cached_rows, "the cached positions differ from the ones made"
    result = {"made_s": made, "cached_s": cached, "ratio": made / cached, "eval_rows": len(made_rows[0]),
              "train_rows": len(made_rows[1]), "cpu": cpu_name()}
    print(f"rows made {made:.1f} s, from the cache {cached:.1f} s: {made / cached:.1f}x "
          f"({result['eval_rows']} held-out, {result['train_rows']} training rows; {result['cpu']})")
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

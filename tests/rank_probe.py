"""A logged-only reward (weight 0) for the distributed test: each trainer process appends its rank and the prompts
it was given to the file $SELFPLAY_RANK_PROBE, and scores 0."""

import json
import os


def rank_probe(prompts, completions, **kwargs):
    with open(os.environ["SELFPLAY_RANK_PROBE"], "a") as out:
        out.write(json.dumps({"rank": os.environ.get("RANK"), "prompts": sorted({str(p) for p in prompts})}) + "\n")
    return [0.0] * len(completions)

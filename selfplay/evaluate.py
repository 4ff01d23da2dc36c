"""Held-out evaluation: greedy answers from the vLLM policy, scored by the domain's reward functions.

    evaluate(policy, tokenizer, rows, reward_funcs, max_tokens=8) -> {"n": 100, "engine_reward": 0.41, ...}

Each reward function's mean over the rows it applies to is one metric (for chess, `legal_move_reward` is the
legal-move rate and `engine_reward` the mean reward). The rows are never trained on.
"""

from selfplay.train import encode_prompt


def evaluate(policy, tokenizer, rows: list[dict], reward_funcs, *, max_tokens: int, stop: list[str] | None = None) -> dict:
    prompts = [row["prompt"] for row in rows]
    ids = [encode_prompt(tokenizer, p) for p in prompts]
    groups = policy.generate(ids, n=1, max_tokens=max_tokens, temperature=0.0, stop=stop)
    completions = [group[0].text for group in groups]
    columns = {key: [row[key] for row in rows] for key in rows[0] if key != "prompt"}
    result = {"n": len(rows), "policy_version": policy.version}
    for reward_func in reward_funcs:
        scores = [s for s in reward_func(prompts, completions, **columns) if s is not None]
        result[reward_func.__name__] = sum(scores) / len(scores) if scores else None
    result["examples"] = completions[:5]
    return result

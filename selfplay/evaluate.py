"""Held-out evaluation: greedy answers from the vLLM policy, scored by the domain's reward functions, with noise.

    result = evaluate(policy, tokenizer, rows, reward_funcs, max_tokens=8, references=chess.eval_references)
    evaluate(policy, tokenizer, rows, reward_funcs, max_tokens=256, samples=10, temperature=0.8)  # + every answer
    result["engine_reward"]            # the mean over the rows the metric applies to
    result["intervals"]["skill"]       # its 95% bootstrap interval over rows
    result["sets"]["mate_in_one"]      # {metric: [mean, low, high]} per held-out set (the rows' "set" column)
    compare(before, after)             # {set: {metric: [difference, low, high]}}, paired over the same rows

Each reward function's scores are one metric (for chess, `legal_move_reward` is the legal-move rate); a domain's
`references(rows, scores)` adds per-row metrics of its own (chess: the random-legal and greedy players and the
policy's skill beside them). The per-row scores and answers are kept in the result, so that two evaluations of the
same rows can be compared pairwise. The rows are never trained on.
"""

from selfplay.plugins import reward_name, trl_arguments
from selfplay.stats import describe_change, mean_interval, paired_difference
from selfplay.tools import sample
from selfplay.train import encode_prompt


def evaluate(policy, tokenizer, rows: list[dict], reward_funcs, *, max_tokens: int, stop: list[str] | None = None,
             tools: list | None = None, samples: int = 1, temperature: float = 0.0, seed: int | None = None,
             references=None) -> dict:
    """`samples` answers per row (greedy at temperature 0), each scored; a row's score is the mean over its answers.
    With samples > 1 the result also holds every answer ("answers") and its scores ("sample_scores")."""
    prompts = [row["prompt"] for row in rows]
    ids = [encode_prompt(tokenizer, p) for p in prompts]
    groups = sample(policy, tokenizer, ids, tools or [], n=samples, max_tokens=max_tokens, temperature=temperature,
                    stop=stop, seed=seed)
    answers = [[c.text for c in group] for group in groups]
    every_row = [row for row in rows for _ in range(samples)]
    as_trl_gives = [[{"role": "assistant", "content": a}] if isinstance(row["prompt"], list) else a
                    for row, a in zip(every_row, (a for group in answers for a in group))]
    arguments = trl_arguments(every_row, as_trl_gives)
    every_score = {reward_name(f): list(f(**arguments)) for f in reward_funcs}
    by_row = {m: [values[i * samples:(i + 1) * samples] for i in range(len(rows))] for m, values in every_score.items()}
    scores = {m: [_mean(row_values) for row_values in values] for m, values in by_row.items()}
    if references is not None:
        scores.update(references(rows, scores))
    result = {"n": len(rows), "policy_version": policy.version, **summarize(rows, scores),
              "completions": [group[0] for group in answers], "scores": scores}
    if samples > 1:
        result |= {"samples": samples, "temperature": temperature, "answers": answers, "sample_scores": by_row}
    return result


def _mean(values: list):
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def set_names(rows: list[dict]) -> list[str]:
    return [row.get("set") or "all" for row in rows]


def summarize(rows: list[dict], scores: dict[str, list]) -> dict:
    """Means over all rows, their intervals, and [mean, low, high] per metric of each held-out set."""
    result, intervals, sets = {}, {}, {}
    names = set_names(rows)
    for metric, values in scores.items():
        kept = [v for v in values if v is not None]
        mean, low, high = mean_interval(kept) if kept else (None, None, None)
        result[metric], intervals[metric] = mean, [low, high]
        for name in dict.fromkeys(names):
            in_set = [v for v, n in zip(values, names) if n == name and v is not None]
            if in_set:
                sets.setdefault(name, {})[metric] = list(mean_interval(in_set))
    return {**result, "intervals": intervals, "sets": sets}


def compare(rows: list[dict], before: dict, after: dict) -> dict[str, dict[str, list[float]]]:
    """Per held-out set and metric, the paired difference after - before: [mean, low, high] over the rows scored
    both times."""
    names, out = set_names(rows), {}
    for metric, old in before["scores"].items():
        new = after["scores"].get(metric)
        if new is None:
            continue
        for name in dict.fromkeys(names):
            pairs = [(o, n) for o, n, s in zip(old, new, names) if s == name and o is not None and n is not None]
            if pairs:
                out.setdefault(name, {})[metric] = list(paired_difference(*zip(*pairs)))
    return out


def _value(triple) -> str:
    mean, low, high = triple
    return f"{mean:.3f} [{low:.2f}, {high:.2f}]"


def eval_table(title: str, metrics: dict[str, str], result: dict, before: dict | None = None,
               change: dict | None = None, columns: tuple[str, str] = ("before", "after")):
    """A rich table, one line per held-out set and metric (in the order of `metrics`, metric -> label): the value
    with its 95% interval, and with `before` and `change`, before, after (or the two `columns`) and the paired
    difference."""
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=None, pad_edge=False)
    for column in ("set", "metric", *((*columns, "change") if before else ("value",))):
        table.add_column(column)
    for name, figures in result["sets"].items():
        for metric, label in metrics.items():
            if metric not in figures:
                continue
            if before:
                old, diff = before["sets"].get(name, {}).get(metric), change.get(name, {}).get(metric)
                cells = (_value(old) if old else "-", _value(figures[metric]), describe_change(*diff) if diff else "-")
            else:
                cells = (_value(figures[metric]),)
            table.add_row(name, label, *cells)
    return table

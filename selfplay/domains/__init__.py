"""Task domains. A domain is a module with:

    eval_rows(config) -> held-out rows [{"prompt": [...messages], <reward columns>...}]
    train_rows(config, held_out) -> training rows of the same shape, none of them held out
    training_data(config, rows, held_out, policy, tokenizer, stats) -> (TRL train dataset, extra trainer callbacks)
    reward_funcs(config) -> (TRL reward functions, their weights, an object to close() at the end)
    eval_references(rows, scores) -> extra per-row held-out metrics (chess: reference players, skill), or None
    EVAL_METRICS: {metric: label} printed for a held-out evaluation, the headline first
    warm_start(config, model_path, run_dir, resources, console) -> a fine-tuned model dir (chess only, --warm-start)
    HEADLINE: the metric the progress display shows beside the reward
    stop_strings(config) -> strings that end a sample (None: the end-of-sequence token or the token budget only)
"""

import importlib

DOMAINS = ("chess", "code")


class DomainError(ValueError):
    """An unknown domain was asked for."""


def get_domain(name: str):
    if name not in DOMAINS:
        raise DomainError(f"unknown domain {name!r}: choose one of {', '.join(DOMAINS)}")
    return importlib.import_module(f"selfplay.domains.{name}")

"""Rewards overlapped with generation: vLLM hands each group over as it finishes, and the rewards TRL trains on are
the ones scored that way, row for row (a tiny random Llama; real vLLM, real TRL)."""

import threading

import pytest

from selfplay.config import make_config


@pytest.fixture(scope="module")
def policy(tiny_model):
    from selfplay.policy import VLLMPolicy

    policy = VLLMPolicy(tiny_model, lora_rank=16)
    yield policy
    policy.close()


def ids_of(groups):
    return [[c.completion_ids for c in group] for group in groups]


@pytest.mark.slow
def test_a_group_is_handed_over_while_longer_ones_still_generate(policy):
    prompts = [[1, 2, 3, 4], [5, 6, 7], [8, 9, 10, 11, 12]]
    handed = []

    def on_group(i, group):
        handed.append((i, policy.llm.llm_engine.has_unfinished_requests(), group))

    groups = policy.generate(prompts, n=3, max_tokens=[2, 300, 2], temperature=1.0, seed=7, on_group=on_group)
    assert sorted(i for i, *_ in handed) == [0, 1, 2]
    assert handed[-1][0] == 1  # the long group ends last...
    assert all(busy for i, busy, _ in handed if i != 1)  # ...and the short ones were handed over while it ran
    assert [group for _, _, group in sorted(handed, key=lambda h: h[0])] == groups
    again = policy.generate(prompts, n=3, max_tokens=[2, 300, 2], temperature=1.0, seed=7)
    assert ids_of(again) == ids_of(groups)  # the same samples as without a callback


def row_in(text: str) -> int:
    """The row number a prompt's text starts with ("row 2: ...")."""
    return int(text.split("row ")[1].split(":")[0])


@pytest.mark.slow
def test_trl_trains_on_the_rewards_scored_during_generation(policy, tiny_model, tmp_path):
    from datasets import Dataset

    from rewards.completions import completion_text
    from selfplay.train import build_trainer

    calls = []

    def letters_reward(prompts, completions, *, row, **kwargs):
        """Depends on the completion and its row's column: a row scored against another row's column shows."""
        calls.append((threading.current_thread().name, list(row), [row_in(p[-1]["content"]) for p in prompts]))
        return [sum(ch.isalpha() for ch in completion_text(c)) / 10 + r for c, r in zip(completions, row)]

    rows = [{"prompt": [{"role": "user", "content": f"row {i}: say something"}], "row": i} for i in range(3)]
    config = make_config(model=tiny_model, steps=1, prompts_per_step=3, num_generations=4, micro_batch_size=4,
                         max_completion_length=16, overlap_rewards="on")
    stats = {}
    trainer = build_trainer(config, tiny_model, Dataset.from_list(rows), [letters_reward], [1.0], policy, tmp_path,
                            stats, [])
    trainer.train()

    assert len(calls) == 3  # one call per group...
    for thread, row, prompt_rows in calls:
        assert thread.startswith("selfplay-rewards")  # ...in the scoring thread, while generation went on
        assert len(set(row)) == 1 and prompt_rows == row  # a group's rows, with their own columns
    logged = trainer._logs
    expected = [sum(ch.isalpha() for ch in completion_text(c)) / 10 + row_in(p[-1]["content"])
                for p, c in zip(logged["prompt"], logged["completion"])]
    assert list(logged["rewards"]["letters_reward"]) == pytest.approx(expected)
    assert stats["reward/evals"] == 12 and stats["time/rewards_s"] >= 0


def test_overlap_is_on_where_generation_has_a_device_of_its_own():
    import torch

    assert make_config(overlap_rewards="on").overlaps_rewards()
    assert not make_config(overlap_rewards="off").overlaps_rewards()
    assert make_config().overlaps_rewards() == torch.cuda.is_available()  # auto: a CPU box shares its cores

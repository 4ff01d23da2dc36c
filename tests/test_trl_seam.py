"""TRL's private API is used in one module, pinned to one TRL version: a different version fails naming each use."""

import importlib
import inspect

import pytest
import trl

from selfplay.trl_seam import PRIVATE_USES, TRL_VERSION, check_trl_version


def test_the_installed_trl_is_the_version_the_private_uses_were_written_for():
    assert trl.__version__ == TRL_VERSION
    check_trl_version()


def test_another_version_fails_naming_every_private_use():
    with pytest.raises(RuntimeError) as error:
        check_trl_version("99.0.0")
    message = str(error.value)
    assert "TRL 99.0.0" in message and TRL_VERSION in message
    for name in PRIVATE_USES:
        assert name in message


def test_every_named_private_use_exists_in_the_installed_trl():
    grpo_source = inspect.getsource(trl.GRPOTrainer)
    for name in PRIVATE_USES:
        owner, _, attributes = name.rpartition(".")
        for attribute in attributes.split(", "):
            if owner == "GRPOTrainer":
                assert f"self.{attribute}" in grpo_source or hasattr(trl.GRPOTrainer, attribute), name
            else:
                assert hasattr(importlib.import_module(owner), attribute), name


def test_no_other_module_reaches_into_trl_privately():
    import pathlib
    import re

    root = pathlib.Path(__file__).parent.parent
    private = re.compile(r"trainer\._[a-z]|trl\w*\.\w*\._|grpo_trainer\.\w+\s*=|_use_triton")
    offenders = [str(path.relative_to(root)) for folder in ("selfplay", "rewards", "sandboxes")
                 for path in (root / folder).rglob("*.py")
                 if path.name != "trl_seam.py" and private.search(path.read_text())]
    assert offenders == []


def test_the_fine_tune_scores_only_the_answer_tokens_and_keeps_trls_losses(tiny_model, tmp_path, monkeypatch):
    """On CPU TRL's fused LM head scores every position, prompt included; the warm start's loss is on the answer's
    few tokens, and scoring only those must give TRL's own losses."""
    import trl.trainer.utils as trl_utils
    from transformers import AutoTokenizer
    from trl.kernels.chunked_logprob import ChunkedLogProbFunction
    from trl.kernels.chunked_logprob import _use_triton as trl_choice  # TRL's own, even if an earlier test chose ours

    from selfplay.lm_head import TargetLogProbs
    from selfplay.sft import fine_tune

    monkeypatch.setattr(trl_utils, "_use_triton", trl_choice)  # TRL's choices for the first run; put back after
    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", ChunkedLogProbFunction)
    scored_rows = []
    for head in (ChunkedLogProbFunction, TargetLogProbs):  # TRL's kernel, selfplay's one-pass head: rows through
        monkeypatch.setattr(head, "apply", lambda hidden, *args, apply=head.apply: scored_rows.append(hidden.size(0))
                            or apply(hidden, *args))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    examples = [{"prompt": [{"role": "user", "content": f"Position {i}: " + "the board, the moves. " * 8}],
                 "completion": [{"role": "assistant", "content": "Nf3"}]} for i in range(8)]

    def run(name):
        scored_rows.clear()
        losses, _ = fine_tune(tiny_model, examples, tmp_path / name, tokenizer, learning_rate=1e-3, epochs=1,
                              batch_size=4, lora_rank=4, seed=0)
        return losses, sum(scored_rows)

    with monkeypatch.context() as trl_path:
        trl_path.setattr("selfplay.trl_seam.cpu_lm_head", lambda: None)
        trl_losses, trl_rows = run("trl")
    losses, rows = run("ours")
    assert losses == pytest.approx(trl_losses, rel=1e-5)
    assert 0 < rows < trl_rows / 5  # ~8 answer tokens of ~60 positions a row

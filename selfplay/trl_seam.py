"""Every use of TRL's private API, in one place, pinned to the TRL version it was written for.

selfplay trains with TRL's GRPOTrainer as it is, and reaches past its public API only here (`PRIVATE_USES` names
each use and why). When TRL changes, `check_trl_version` fails with that list (tests/test_trl_seam.py runs it), and
these are the places to read against the new TRL:

    trainer = SelfplayGRPOTrainer(..., stats=stats)   # TRL's GRPOTrainer + shared-prefix logprobs + step timing
    last_batch(trainer)                                # the last generation batch TRL logged
"""

import contextlib

from trl import GRPOTrainer
from trl.trainer import grpo_trainer

from selfplay import step_time
from selfplay.shared_prefix import prompt_groups, shared_prefix_logps

TRL_VERSION = "1.16.0"
PRIVATE_USES = {
    "GRPOTrainer._prepare_inputs": "overridden: groups kept together in micro-batches; timed",
    "GRPOTrainer._get_per_token_logps_and_entropies": "overridden: a group's prompt through the model once",
    "GRPOTrainer._generate_and_score_completions": "overridden: the batch's rows kept for the rollout's rewards",
    "GRPOTrainer._logs": "read: the last batch's prompts, completions, rewards, advantages (samples.jsonl)",
    "GRPOTrainer._log_completion_extra, _log_metric": "passed to reward functions scored outside TRL's call",
    "trl.trainer.grpo_trainer.shuffle_sequence_dict": "replaced while preparing a batch: no shuffle of its rows",
    "trl.trainer.utils._use_triton": "replaced on CPU: the fused LM head scores completion tokens only (GRPO, SFT)",
    "trl.trainer.utils._ChunkedLogProbFunction": "replaced on CPU: a frozen head in one pass (selfplay.lm_head)",
}


def check_trl_version(version: str | None = None) -> None:
    """Raise, naming each private use, if TRL (or `version`) is not the version they were written for."""
    import trl

    version = version or trl.__version__
    if version != TRL_VERSION:
        uses = "\n".join(f"  {name}: {why}" for name, why in PRIVATE_USES.items())
        raise RuntimeError(f"TRL {version} is installed; selfplay's uses of TRL's private API were written for "
                           f"TRL {TRL_VERSION}. Check each in selfplay/trl_seam.py, then update TRL_VERSION:\n{uses}")


@contextlib.contextmanager
def groups_kept_together():
    """TRL shuffles the generation batch before splitting it into micro-batches; skip that shuffle here."""
    shuffle = grpo_trainer.shuffle_sequence_dict
    grpo_trainer.shuffle_sequence_dict = lambda batch: batch
    try:
        yield
    finally:
        grpo_trainer.shuffle_sequence_dict = shuffle


def cpu_lm_head() -> None:
    """Make TRL's fused LM head on CPU score only the completion tokens, as it already does on Triton devices, and
    with a frozen head in one pass over the vocabulary (selfplay.lm_head) instead of TRL's tiles.

    Without Triton, TRL runs the LM head over every position, prompt included (to keep tile shapes fixed for
    compilers), with (tokens x 32768) float32 temporaries: on CPU that is ~40x the work for 8-token answers to
    300-token prompts, and >12 GB of memory per 8 sequences in GRPO; in the SFT warm start, whose loss is on the
    answer's few tokens too, it was ~27% of a step. The choice is two names in trl.trainer.utils; the loss and metrics
    are the same (the other positions were masked to zero).
    """
    import trl.trainer.utils as trl_utils

    from selfplay.lm_head import FusedLMHead

    trl_utils._use_triton = lambda device: True
    trl_utils._ChunkedLogProbFunction = FusedLMHead  # TRL's kernel where it does not apply


def last_batch(trainer) -> dict:
    """TRL's record of the last generation batch: prompt, completion, advantages, rewards {name: values}, extra."""
    return trainer._logs


def reward_loggers(trainer) -> dict:
    """The `log_extra` and `log_metric` TRL passes its reward functions, for reward calls made outside TRL."""
    return {"log_extra": trainer._log_completion_extra, "log_metric": trainer._log_metric}


class SelfplayGRPOTrainer(GRPOTrainer):
    """TRL's GRPOTrainer, with a group's samples scored over one pass of their shared prompt (selfplay.shared_prefix),
    the batch's rows kept for the rollout (`rollout_inputs`), and each iteration's update timed into `stats`
    (selfplay.step_time: forward, backward, and TRL's own batch work as `other`)."""

    def __init__(self, *args, stats: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.stats = stats if stats is not None else {}
        self.rollout_inputs: list[dict] = []

    def _generate_and_score_completions(self, inputs):
        self.rollout_inputs = inputs  # the batch's rows, for the rollout to score each group as it arrives
        return super()._generate_and_score_completions(inputs)

    def _prepare_inputs(self, generation_batch):
        # the whole shuffle is skipped only where it changes nothing: one optimizer step per generation batch, whose
        # micro-batch gradients are all summed before the step (see selfplay.shared_prefix)
        one_step = self.num_iterations == 1 and self.args.steps_per_generation == self.args.gradient_accumulation_steps
        with step_time.timed(self.stats, "other"), groups_kept_together() if one_step else contextlib.nullcontext():
            return super()._prepare_inputs(generation_batch)  # around the rollout's own parts: TRL's batch work

    def compute_loss(self, *args, **kwargs):
        with step_time.timed(self.stats, "forward"):
            return super().compute_loss(*args, **kwargs)

    def training_step(self, *args, **kwargs):
        """TRL's micro-step: prepare the batch, forward, backward; the backward is what the other parts leave."""
        with step_time.timed(self.stats, "backward"):
            return super().training_step(*args, **kwargs)

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                           compute_entropy=False, compute_aux_loss=False, **multimodal):
        prompt_len = input_ids.size(1) - logits_to_keep
        groups = prompt_groups(input_ids, attention_mask, prompt_len)
        shareable = (
            prompt_len > 1 and len(groups) < input_ids.size(0) and not compute_aux_loss
            and self.accelerator.num_processes == 1 and all(v is None for v in multimodal.values())
        )
        if not shareable:
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy, compute_aux_loss,
                **multimodal,
            )
        with self.accelerator.autocast():
            logps, entropies = shared_prefix_logps(model, input_ids, attention_mask, logits_to_keep, groups,
                                                   compute_entropy)
        return logps, entropies, None

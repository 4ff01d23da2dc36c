"""The in-process vLLM policy when its engine dies: restarted once, the call retried with the same samples; an engine
that dies again raises PolicyError saying what to check. Real vLLM on the tiny model, its engine processes killed."""

import logging
import os
import signal

import psutil
import pytest

from selfplay.policy import PolicyError, VLLMPolicy

PROMPTS = [[100, 101, 102, 103], [200, 201, 202]]


def kill_engine() -> list[int]:
    """SIGKILL this process's vLLM engine processes (EngineCore and its Worker), as the out-of-memory killer would."""
    engine = [p for p in psutil.Process().children(recursive=True) if p.name().startswith("VLLM::")]
    for process in engine:
        os.kill(process.pid, signal.SIGKILL)
    psutil.wait_procs(engine, timeout=10)
    return [p.pid for p in engine]


def sample(policy: VLLMPolicy) -> list[list[list[int]]]:
    groups = policy.generate(PROMPTS, n=3, max_tokens=6, temperature=1.0, seed=7)
    return [[completion.completion_ids for completion in group] for group in groups]


@pytest.mark.slow
def test_a_killed_engine_is_restarted_once_then_a_second_death_raises(tiny_model, caplog):
    policy = VLLMPolicy(tiny_model, lora_rank=None, answer_tokens=8)
    try:
        before = sample(policy)
        assert kill_engine(), "no vLLM engine process to kill"
        with caplog.at_level(logging.WARNING, logger="selfplay.policy"):
            assert sample(policy) == before  # restarted, and the seeded samples are the same
        assert "restarting the engine" in caplog.text

        start = policy._start

        def start_and_die():
            llm = start()
            kill_engine()
            return llm

        policy._start = start_and_die
        kill_engine()
        with pytest.raises(PolicyError, match="vLLM failed twice in a row .*check free memory"):
            sample(policy)
    finally:
        policy.close()

"""The in-process vLLM policy when its engine dies, mid-generation too (vLLM's own client then waited forever):
restarted once, the call retried with the same samples; an engine that dies again raises PolicyError saying what to
check. Real vLLM on the tiny model, its engine processes killed as the out-of-memory killer would. Between two
generations the engine's processes sleep."""

import contextlib
import logging
import os
import signal
import time

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


class Hung(BaseException):
    """Not an Exception: the policy's restart-on-failure must not catch it."""


@contextlib.contextmanager
def at_most(seconds: int):
    """A hang (what this guards against) fails the test instead of stalling the suite."""
    def hung(signum, frame):
        raise Hung(f"generate still waiting after {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def sample(policy: VLLMPolicy, on_group=None) -> list[list[list[int]]]:
    """The first prompt's group ends after 2 tokens, the second's runs on to 40."""
    groups = policy.generate(PROMPTS, n=3, max_tokens=[2, 40], temperature=1.0, seed=7, on_group=on_group)
    return [[completion.completion_ids for completion in group] for group in groups]


@pytest.mark.slow
def test_an_engine_killed_mid_generation_is_restarted_once_then_a_second_death_raises(tiny_model, caplog):
    policy = VLLMPolicy(tiny_model, lora_rank=None, answer_tokens=8)
    try:
        before = sample(policy)
        killed = []

        def kill_when_the_first_group_ends(i, group):
            if not killed:  # the second group is still generating
                killed.extend(kill_engine())

        with caplog.at_level(logging.WARNING, logger="selfplay.policy"), at_most(180):
            assert sample(policy, kill_when_the_first_group_ends) == before  # restarted; the same seeded samples
        assert killed, "no vLLM engine process to kill"
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


@pytest.mark.slow
def test_the_engine_processes_run_without_dynamo_and_still_rank_logprobs(tiny_model, monkeypatch):
    """On CPU the engine runs eagerly: dynamo would compile the sampler's logprob-rank count at every engine's first
    generation (~1.7 s on 2 cores). vLLM spawns its engine processes with this process's environment (their own
    /proc/PID/environ is blank: vLLM sets their process titles over it). The logprobs stay the sampled tokens'."""
    monkeypatch.delenv("TORCHDYNAMO_DISABLE", raising=False)
    policy = VLLMPolicy(tiny_model, lora_rank=None, answer_tokens=8)
    try:
        assert os.environ.get("TORCHDYNAMO_DISABLE") == "1"
        group = policy.generate(PROMPTS[:1], n=4, max_tokens=6, temperature=1.0, seed=3)[0]
        for completion in group:
            assert len(completion.logprobs) == len(completion.completion_ids) > 0
            assert all(lp <= 0.0 for lp in completion.logprobs)
    finally:
        policy.close()


@pytest.mark.slow
def test_the_engine_processes_go_idle_when_a_generation_ends(tiny_model):
    """The loop trains right after it generates: vLLM's worker polled its queue with sched_yield for a second after
    each message, a core taken from the trainer (selfplay.vllm_cpu_idle cuts that window to 10 ms)."""
    policy = VLLMPolicy(tiny_model, lora_rank=None, answer_tokens=8)
    try:
        engine = [p for p in psutil.Process().children(recursive=True) if p.name().startswith("VLLM::")]
        assert engine
        for _ in range(2):  # the second generation: messages right after the first's
            assert policy.generate(PROMPTS[:2], n=4, max_tokens=6, temperature=1.0, seed=3)[1]
            before = sum(sum(p.cpu_times()[:2]) for p in engine)
            time.sleep(0.5)
            used = sum(sum(p.cpu_times()[:2]) for p in engine) - before
            assert used < 0.15, f"vLLM's processes used {used:.2f} s of CPU in the 0.5 s after a generation"
    finally:
        policy.close()

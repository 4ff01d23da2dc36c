"""Policy serving through vLLM: sampled completions with their token ids and logprobs, new weights per version.

    policy = VLLMPolicy(model_dir, lora_rank=16)
    groups = policy.generate([prompt_ids, ...], n=8, max_tokens=8, temperature=1.0)   # one group per prompt
    policy.load_adapter("runs/x/adapters/v1")   # the LoRA adapter the trainer just saved is what vLLM now serves

After every policy update the trainer saves a LoRA adapter into a new directory, and `load_adapter` hot-loads it into
the running engine under a new id (~1 s on CPU). The logprobs vLLM reports are taken after temperature scaling
(`logprobs_mode="processed_logprobs"`), so they are comparable with the trainer's logprobs of the same tokens.

vLLM runs in float32 on CPU (bfloat16 on vLLM CPU gives different answers from the trainer's model) and in the
model's dtype on CUDA. If the engine dies, it is restarted once with the current adapter and the call retried; a
second failure raises `PolicyError` saying what to check. An engine that dies mid-generation (the out-of-memory
killer) would leave vLLM's client waiting forever: `wake_on_engine_death` turns that into vLLM's EngineDeadError.
"""

import logging
import os
import threading
from dataclasses import dataclass

log = logging.getLogger(__name__)


VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts; adapters up to it
# The environment of vLLM's engine processes on CPU. vLLM CPU keeps a core free by default and serves on the rest: one
# core of two here; the loop generates and trains in turn, so generation gets every core (1.56x the tokens/s on 2
# cores). Dynamo off: with enforce_eager the only compiled function left is the sampler's logprob-rank count
# (`batched_count_greater_than`), whose compile took ~1.7 s of every engine's first generation, for a sum over ~32 rows
CPU_ENGINE_ENV = {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "TORCHDYNAMO_DISABLE": "1"}


def cpu_kv_cache_bytes(answer_tokens: int) -> int:
    """vLLM's KV cache on CPU, fixed (its default is a share of RAM), by the longest answer the caller generates.
    Short answers (chess: 8 tokens) are prefill-bound: 512 MiB (~11k tokens of the 135M model) generated 300 held-out
    chess prompts as fast as 2 GiB (48-53 s against 44-55 s, Xeon) with 1.8 GB less memory, 2.3 GB once LoRA is on.
    Long ones (code: 256) decode many at once: 2 GiB (~46k tokens) gave 1.22x the tokens/s of 512 MiB on 300 code
    samples."""
    return 512 * 2**20 if answer_tokens <= 64 else 2 * 2**30


class PolicyError(RuntimeError):
    """vLLM cannot start or keeps dying; the message says what to do."""


@dataclass
class Completion:
    completion_ids: list[int]
    logprobs: list[float]  # logprob of each sampled token under the served policy
    text: str
    stop_reason: str | int | None = None  # the stop string (or token id) that ended it, None at EOS or the budget
    env_mask: list[int] | None = None  # with tools: 1 for the policy's tokens, 0 for the tools' results


class VLLMPolicy:
    def __init__(
        self,
        model: str,
        *,
        lora_rank: int | None,
        seed: int = 0,
        max_model_len: int = 2048,
        gpu_memory_utilization: float = 0.3,
        answer_tokens: int = 256,
    ):
        import torch

        from selfplay.vllm_cpu_blocks import cpu_block_size

        self.on_cuda = torch.cuda.is_available()
        self.engine_args = dict(
            model=model,
            dtype="auto" if self.on_cuda else "float32",
            enforce_eager=not self.on_cuda,  # torch.compile costs minutes of start on 2 cores
            enable_prefix_caching=True,  # a GRPO group shares its prompt: prefill it once
            enable_lora=lora_rank is not None,
            max_lora_rank=next(r for r in VLLM_LORA_RANKS if r >= (lora_rank or 16)),
            max_loras=1,
            seed=seed,
            max_model_len=max_model_len,
            logprobs_mode="processed_logprobs",
            gpu_memory_utilization=gpu_memory_utilization,
            disable_log_stats=False,  # per-request timings: the prefill part of a batch's generation
        )
        if not self.on_cuda:
            os.environ.update({**CPU_ENGINE_ENV, **os.environ})
            self.engine_args["kv_cache_memory_bytes"] = cpu_kv_cache_bytes(answer_tokens)
            # vLLM 0.32's CPU path crashes ("CPU Generator does not use offset") when a seeded request's prefill is
            # split over steps (e.g. 40 seeded code prompts x 5 samples): whole prefills only
            self.engine_args["enable_chunked_prefill"] = False
            self.engine_args["block_size"] = cpu_block_size()
        self.version = 0  # policy version served now: 0 = the base weights, k = adapter after update k
        self.lora = None
        self.prefill_seconds: float | None = None  # of the last generate call: until every request's first token
        self.llm = self._start()

    def _start(self):
        from vllm import LLM

        try:
            llm = LLM(**self.engine_args)
        except Exception as error:  # vLLM raises many types at start; all mean the same to the user
            raise PolicyError(
                f"vLLM could not start on {self.engine_args['model']!r}: {error}. Check that the model directory "
                "loads with transformers, that `make setup` installed vLLM, and that there is free memory."
            ) from error
        wake_on_engine_death(llm)
        return llm

    def load_adapter(self, adapter_dir: str, version: int) -> None:
        """Serve the LoRA adapter saved in `adapter_dir` as policy version `version` (ids must grow)."""
        from vllm.lora.request import LoRARequest

        if not self.engine_args["enable_lora"]:
            raise PolicyError("this policy was started without LoRA (full fine-tune): it cannot load an adapter")
        self.lora = LoRARequest(f"policy-v{version}", version, str(adapter_dir))
        self.version = version

    def generate(
        self,
        prompts: list[list[int]],
        *,
        n: int,
        max_tokens: int | list[int],
        temperature: float,
        top_p: float = 1.0,
        top_k: int = 0,
        stop: list[str] | None = None,
        include_stop: bool = False,
        seed: int | None = None,
        on_group=None,
    ) -> list[list[Completion]]:
        """`n` sampled completions for each tokenized prompt (temperature 0 = greedy), within `max_tokens` (one budget,
        or one per prompt). With `seed`, prompt i samples from its own generator seeded `seed + i`: the same call
        gives the same samples, also after a restart. A completion's text ends before the stop string that ended it,
        or after it with `include_stop`; its token ids always hold the whole last token. `on_group(i, completions)`
        is called as soon as prompt i's group is done, while the others generate (again after a restart)."""
        from vllm import SamplingParams, TokensPrompt

        budgets = max_tokens if isinstance(max_tokens, list) else [max_tokens] * len(prompts)

        def sampling(i: int) -> SamplingParams:
            return SamplingParams(
                n=n,
                max_tokens=budgets[i],
                temperature=temperature,
                top_p=top_p,
                top_k=max(top_k, 0),
                logprobs=0,  # the sampled token's own logprob
                stop=stop,
                include_stop_str_in_output=include_stop,
                seed=None if seed is None else seed + i,
            )

        def group(out) -> list[Completion]:
            return [Completion(list(c.token_ids), [lp[t].logprob for t, lp in zip(c.token_ids, c.logprobs)], c.text,
                               c.stop_reason) for c in out.outputs]

        params = [sampling(i) for i in range(len(prompts))]
        requests = [TokensPrompt(prompt_token_ids=ids) for ids in prompts]
        groups: list = [None] * len(prompts)

        def done(i: int, out) -> None:
            groups[i] = group(out)
            if on_group is not None:
                on_group(i, groups[i])

        self._generate(requests, params, done)
        return groups

    def _generate(self, requests, params, done) -> None:
        """Run the requests through the engine (what `LLM.generate` does), calling `done(i, output)` as each ends."""
        for attempt in range(2):
            try:
                first = self.llm.request_counter.counter  # LLM numbers its requests in order from here
                self.llm.enqueue(requests, params, lora_request=self.lora, use_tqdm=False)
                engine = self.llm.llm_engine
                self.prefill_seconds = 0.0
                while engine.has_unfinished_requests():
                    for out in engine.step():
                        if out.finished:
                            if out.metrics is not None:
                                self.prefill_seconds = max(self.prefill_seconds, out.metrics.first_token_latency)
                            done(int(out.request_id) - first, out)
                return
            except Exception as error:  # EngineDeadError and friends: restart once, then give up loudly
                if attempt == 1:
                    raise PolicyError(
                        f"vLLM failed twice in a row ({error}); check free memory "
                        "and the log above for the engine's own error"
                    ) from error
                log.warning("vLLM generation failed (%s); restarting the engine", error)
                self.close()
                self.llm = self._start()

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
            if shutdown is not None:
                shutdown()
            del llm


def wake_on_engine_death(llm) -> None:
    """vLLM 0.32's client notices a dead engine process and shuts itself down, but a call waiting for the engine's
    output then waits forever (nothing wakes its output queue). A thread waits for the engine processes to exit and
    puts an EngineDeadError in that queue: the waiting `step()` raises it, and `generate` restarts the engine. (After a
    `close()` the error lands in a queue nobody reads.) A vLLM without these internals is left as it is."""
    from multiprocessing.connection import wait

    from vllm.v1.engine.exceptions import EngineDeadError

    core = llm.llm_engine.engine_core
    manager = getattr(getattr(core, "resources", None), "engine_manager", None)
    outputs = getattr(core, "outputs_queue", None)
    if manager is None or outputs is None or not hasattr(manager, "sentinels"):
        return
    sentinels = manager.sentinels()

    def wake_when_dead():
        try:
            wait(sentinels)
        except OSError:  # the process objects were closed first: the policy closed it
            return
        outputs.put_nowait(EngineDeadError())

    threading.Thread(target=wake_when_dead, name="selfplay-engine-death", daemon=True).start()

"""Tools inside an answer: the policy writes a call, the environment appends the result, and the answer goes on.

    Tool(open="<calc>", close="</calc>", run=calculate)   # what a domain's `tools(config)` returns
    groups = sample(policy, tokenizer, prompt_ids, tools, n=8, max_tokens=64, temperature=1.0)

Sampling with tools takes several steps. vLLM samples until an answer ends or closes a call (each tool's `close` is a
stop string). For every closed call, the tool runs on the text between `open` and `close`, its result is tokenized and
appended, and the answer continues as a new vLLM request whose prompt is the old prompt plus the answer so far
(prefix-cached) within what is left of the token budget. The result tokens are the environment's, not the policy's:
`env_mask` marks them 0, their logprobs are 0, and TRL's GRPOTrainer (the `env_mask` a rollout_func returns) leaves them
out of the loss.

TRL's own `GRPOTrainer(tools=...)` does not fit: it needs a chat template that renders tool calls (SmolLM2's does
not), and its tool loop continues answers with TRL's generation backend, not the rollout that serves our policy.
"""

import logging
from dataclasses import dataclass
from typing import Callable

from selfplay.policy import Completion

log = logging.getLogger(__name__)

MAX_CALLS = 8  # tool calls per answer; a later call gets no result and ends the answer


@dataclass
class Tool:
    open: str  # the text that opens a call ("" = the call is all the text since the last result)
    close: str  # the text that closes it (a stop string)
    run: Callable[[str], str]  # the call's text -> the text appended after it; an exception becomes "error: ..."

    def result(self, answer: str) -> str:
        """The text to append to `answer`, which ends with this tool's `close`."""
        call = answer[: len(answer) - len(self.close)]
        if self.open and self.open in call:
            call = call[call.rindex(self.open) + len(self.open):]
        try:
            return self.run(call)
        except Exception as error:  # a bad call is the policy's failure: it reads the error, as in a REPL
            log.debug("tool %s failed on %r: %s", self.close, call, error)
            return f"error: {error}"


def sample(policy, tokenizer, prompts: list[list[int]], tools: list[Tool], *, n: int, max_tokens: int,
           stop: list[str] | None = None, seed: int | None = None, on_group=None, **sampling) -> list[list[Completion]]:
    """`policy.generate` with tool calls answered inside the answers (see the module's docstring): `n` completions per
    prompt, each with its text decoded from its tokens, results included, and its `env_mask`. `on_group(i, group)`
    is called once per prompt with its finished group: as it finishes without tools, at the end with them."""
    if not tools:
        return policy.generate(prompts, n=n, max_tokens=max_tokens, stop=stop, seed=seed, on_group=on_group,
                               **sampling)
    by_close = {tool.close: tool for tool in tools}
    stops = [*(stop or []), *by_close]
    groups = [[Completion([], [], "", env_mask=[]) for _ in range(n)] for _ in prompts]
    parts = policy.generate(prompts, n=n, max_tokens=max_tokens, stop=stops, include_stop=True, seed=seed, **sampling)
    going = [(prompt, answer, part) for prompt, group, sampled in zip(prompts, groups, parts)
             for answer, part in zip(group, sampled)]
    for step in range(MAX_CALLS + 1):
        calling = []
        for prompt, answer, part in going:
            answer.completion_ids += part.completion_ids
            answer.logprobs += part.logprobs
            answer.env_mask += [1] * len(part.completion_ids)
            answer.stop_reason = part.stop_reason
            left = max_tokens - len(answer.completion_ids)
            if part.stop_reason in by_close and step < MAX_CALLS and left > 0:
                result = tokenizer(by_close[part.stop_reason].result(part.text), add_special_tokens=False)["input_ids"]
                result = result[:left]
                answer.completion_ids += result
                answer.logprobs += [0.0] * len(result)
                answer.env_mask += [0] * len(result)
                if left > len(result):
                    calling.append((prompt, answer, left - len(result)))
        if not calling:
            break
        parts = policy.generate([prompt + answer.completion_ids for prompt, answer, _ in calling], n=1,
                                max_tokens=[left for *_, left in calling], stop=stops, include_stop=True,
                                seed=None if seed is None else seed + (step + 1) * 1_000_000_007, **sampling)
        going = [(prompt, answer, part) for (prompt, answer, _), [part] in zip(calling, parts)]
    for i, group in enumerate(groups):
        for answer in group:
            answer.text = tokenizer.decode(answer.completion_ids, skip_special_tokens=True)
        if on_group is not None:
            on_group(i, group)
    return groups


def count(env_mask: list[int]) -> int:
    """The tool calls an answer made: the results in its `env_mask`."""
    return sum(1 for before, now in zip([1, *env_mask], env_mask) if before == 1 and now == 0)

"""The policy on vLLM's own OpenAI-compatible server: the loop is its client.

    server = VLLMServer(model_dir, lora_rank=16, log_path="runs/x/vllm-server.log")   # --vllm-server auto
    policy = ServerPolicy(server.start(), lora_rank=16, server=server)
    policy = ServerPolicy("http://gpu-box:8000", lora_rank=16)                         # --vllm-server URL

`ServerPolicy` has `VLLMPolicy`'s interface (generate, load_adapter, version, close), so the rollout, the evaluation
and the tools do not know which one they talk to. Prompts go to `/v1/completions` as token ids, one request per
prompt (each with its own seed and budget), all in flight at once; the answers come back with their token ids and
each sampled token's logprob (`return_token_ids`, `logprobs: 0`; the server runs with
`--logprobs-mode processed_logprobs`, as the in-process engine does). A new LoRA adapter reaches the server through
its runtime loading (`/v1/load_lora_adapter`, `VLLM_ALLOW_RUNTIME_LORA_UPDATING`): the adapter's directory must be
readable by the server under the same path (one box, or a shared filesystem).

Every call has a timeout. A server that stops answering gets a bounded recovery: one restart if the loop started it
(`auto`), a few reconnects to a URL; the current adapter is loaded again, then the call is retried. After that,
`PolicyError` names the URL.
"""

import functools
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import requests

from selfplay.interrupts import die_with_parent
from selfplay.policy import (CPU_ENGINE_ENV, VLLM_LORA_RANKS, Completion, PolicyError,
                             cpu_kv_cache_bytes)
from selfplay.vllm_cpu_blocks import cpu_block_size

log = logging.getLogger(__name__)

RECONNECT_WAITS = (2, 5, 10)  # seconds before each new try at a URL that stopped answering


class VLLMServer:
    """`python -m vllm.entrypoints.openai.api_server` as a child process on a free local port (--vllm-server auto)."""

    def __init__(self, model: str, *, lora_rank: int | None, seed: int = 0, log_path: str | Path,
                 max_model_len: int = 2048, answer_tokens: int = 256, start_timeout: float = 600,
                 extra_args: list[str] | None = None):
        import torch

        self.model, self.log_path, self.start_timeout = model, Path(log_path), start_timeout
        self.on_cuda = on_cuda = torch.cuda.is_available()
        self.args = [
            "--model", model, "--seed", str(seed), "--max-model-len", str(max_model_len),
            "--logprobs-mode", "processed_logprobs", "--enable-prefix-caching",
            "--dtype", "auto" if on_cuda else "float32",  # float32 on CPU: see selfplay.policy
            *(["--enable-lora", "--max-lora-rank", str(next(r for r in VLLM_LORA_RANKS if r >= lora_rank)),
                "--max-loras", "1"] if lora_rank else []),
            # CUDA: a share of the GPU, as the in-process engine takes (trainer processes may share it)
            *(["--gpu-memory-utilization", "0.3"] if on_cuda else [
                "--enforce-eager", "--kv-cache-memory-bytes", str(cpu_kv_cache_bytes(answer_tokens)),
                "--no-enable-chunked-prefill", "--block-size", str(cpu_block_size())]),
            *(extra_args or []),
        ]
        self.process: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> str:
        """Start the server and wait until it answers /health; returns its URL."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        env = {**({} if self.on_cuda else CPU_ENGINE_ENV), **os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.process = self._spawn([sys.executable, "-m", "vllm.entrypoints.openai.api_server", *self.args,
                                    "--host", "127.0.0.1", "--port", str(port)], env)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PolicyError(f"the vLLM server on {self.model!r} exited at start (status "
                                  f"{self.process.returncode}); its output is in {self.log_path}")
            try:
                if requests.get(f"{self.url}/health", timeout=5).ok:
                    log.info("vLLM server up at %s (%s)", self.url, self.model)
                    return self.url
            except requests.RequestException:
                pass
            time.sleep(1)
        self.stop()
        raise PolicyError(f"the vLLM server on {self.model!r} did not answer within {self.start_timeout:.0f} s; "
                          f"its output is in {self.log_path}")

    def _spawn(self, argv: list[str], env: dict) -> subprocess.Popen:
        """Start the server from a thread that waits for it: the server gets SIGTERM (and shuts its engine down) when
        that thread ends, so with this process, even one killed by kill -9; in a session of its own, the terminal's
        Ctrl-C is ours."""
        started: Future[subprocess.Popen] = Future()

        def keep() -> None:
            try:
                with open(self.log_path, "ab") as out:
                    process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                               env=env, start_new_session=True,
                                               preexec_fn=functools.partial(die_with_parent, os.getpid()))
            except BaseException as error:
                started.set_exception(error)
                return
            started.set_result(process)
            process.wait()

        threading.Thread(target=keep, name="vllm-server", daemon=True).start()
        return started.result()

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, 15)  # the server and its engine core process
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()


class ServerPolicy:
    """`VLLMPolicy`'s interface over HTTP to a vLLM server; `server` is the one the loop started, if any."""

    def __init__(self, url: str, *, lora_rank: int | None, server: VLLMServer | None = None, timeout: float = 600):
        self.url, self.server, self.timeout = url.rstrip("/"), server, timeout
        self.lora_enabled = lora_rank is not None
        self.version, self.lora = 0, None  # lora: the adapter's name on the server, None = the base model
        self.recovering, self.recoveries = threading.Lock(), 0  # requests in flight fail together: recover once
        self.http = requests.Session()
        self.http.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=64))  # one connection per prompt
        self.http.mount("https://", requests.adapters.HTTPAdapter(pool_maxsize=64))
        self.model = self._call("GET", "/v1/models")["data"][0]["id"]  # the base model's name on the server

    def load_adapter(self, adapter_dir: str, version: int) -> None:
        """Serve the LoRA adapter in `adapter_dir` as policy version `version`; the previous one is unloaded."""
        if not self.lora_enabled:
            raise PolicyError("this policy was started without LoRA (full fine-tune): it cannot load an adapter")
        previous, name = self.lora, f"policy-v{version}"
        self.lora = (name, str(Path(adapter_dir).resolve()))
        self.version = version
        recoveries = self.recoveries
        self._load(self.lora, recover=True)  # a server that dies here is restarted (auto) and given this adapter
        if previous and previous[0] != name and self.recoveries == recoveries:  # a restarted one never had it
            self._call("POST", "/v1/unload_lora_adapter", {"lora_name": previous[0]}, recover=False)

    def follow(self, adapter_dir: str, version: int) -> None:
        """Sample from the adapter that another client (the first trainer process) has loaded as `version`."""
        self.lora, self.version = (f"policy-v{version}", str(Path(adapter_dir).resolve())), version

    def _load(self, lora, recover: bool = False) -> None:
        body = {"lora_name": lora[0], "lora_path": lora[1], "load_inplace": True}  # loading twice is harmless
        try:
            self._call("POST", "/v1/load_lora_adapter", body, recover=recover)
        except PolicyError as error:
            raise PolicyError(f"{error}. The server must run with --enable-lora, --max-lora-rank at least the "
                              "adapter's, and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True in its environment, and read "
                              f"{lora[1]}") from None

    def generate(self, prompts: list[list[int]], *, n: int, max_tokens: int | list[int], temperature: float,
                 top_p: float = 1.0, top_k: int = 0, stop: list[str] | None = None, include_stop: bool = False,
                 seed: int | None = None, on_group=None) -> list[list[Completion]]:
        """As `VLLMPolicy.generate`: `n` completions per prompt, prompt i seeded `seed + i`, `on_group(i, group)` called
        (from a request thread) as soon as prompt i's group is back."""
        budgets = max_tokens if isinstance(max_tokens, list) else [max_tokens] * len(prompts)

        def one(i: int) -> list[Completion]:
            body = {
                "model": self.lora[0] if self.lora else self.model, "prompt": prompts[i], "n": n,
                "max_tokens": budgets[i], "temperature": temperature, "top_p": top_p,
                "top_k": top_k if top_k > 0 else -1, "logprobs": 0, "stop": stop or [],
                "include_stop_str_in_output": include_stop, "seed": None if seed is None else seed + i,
                "return_token_ids": True, "skip_special_tokens": True,
            }
            choices = sorted(self._call("POST", "/v1/completions", body)["choices"], key=lambda c: c["index"])
            group = [Completion(c["token_ids"], c["logprobs"]["token_logprobs"], c["text"], c.get("stop_reason"))
                     for c in choices]
            if on_group is not None:
                on_group(i, group)
            return group

        if not prompts:
            return []
        with ThreadPoolExecutor(min(len(prompts), 64)) as pool:  # the server batches what is in flight together
            return list(pool.map(one, range(len(prompts))))

    def _call(self, method: str, path: str, body: dict | None = None, recover: bool = True):
        """One request; a server that does not answer gets a restart (auto) or a few reconnects, then PolicyError."""
        waits = (0,) if self.server else RECONNECT_WAITS
        for attempt in range(len(waits) + 1):
            recoveries = self.recoveries
            try:
                response = self.http.request(method, self.url + path, json=body, timeout=self.timeout)
            except requests.RequestException as error:
                failure = error
            else:
                if response.status_code < 500:
                    if not response.ok:
                        raise PolicyError(f"the vLLM server at {self.url} refused {path}: {response.status_code} "
                                          f"{response.text[:500]}")
                    json_body = response.headers.get("content-type", "").startswith("application/json")
                    return response.json() if json_body else response.text  # the LoRA routes answer in text
                failure = RuntimeError(f"{response.status_code} {response.text[:300]}")
            if not recover or attempt == len(waits):
                break
            with self.recovering:
                if self.recoveries == recoveries:  # else another request's recovery came after this one failed
                    log.warning("the vLLM server at %s failed on %s (%s); %s", self.url, path, failure,
                                "restarting it" if self.server else f"trying again in {waits[attempt]} s")
                    self._recover(waits[attempt])
                    self.recoveries += 1
        raise PolicyError(f"the vLLM server at {self.url} does not answer ({failure}). Check that it runs and is "
                          "reachable from here" + (f"; its output is in {self.server.log_path}" if self.server else
                                                   ", or let the loop start its own with --vllm-server auto"))

    def _recover(self, wait: float) -> None:
        try:
            if self.server:
                self.server.stop()
                self.url = self.server.start()
            else:
                time.sleep(wait)
            if self.lora:  # a restarted server has lost the adapters loaded at runtime
                self._load(self.lora)
        except PolicyError as error:
            log.warning("%s", error)

    def close(self) -> None:
        self.http.close()
        if self.server:
            self.server.stop()

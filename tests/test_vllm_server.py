"""The policy on vLLM's own OpenAI-compatible server (CPU build, runtime LoRA loading), driven by the loop.

The tiny random Llama and the dense chess domain as in test_loop. A server started by the loop (`auto`) is
restarted once when it dies; a server at a URL that dies stops the run with an error naming the URL, with every
iteration either whole or absent.
"""

import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from dense_domain import DENSE

from selfplay.config import ConfigError, make_config
from selfplay.policy import PolicyError


def tiny_config(tiny_model, runs_dir, run, **settings):
    return make_config(domain=DENSE, model=tiny_model, warm_start=0, runs_dir=str(runs_dir), run=run,
                       prompts_per_step=2, num_generations=4, micro_batch_size=4, learning_rate=0.05,
                       train_positions=8, eval_positions=2, engine_limit="depth=4", **settings)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def kill_after_first_iteration(run_dir: Path, kill) -> threading.Thread:
    """Call `kill()` as soon as the run's first iteration is in metrics.jsonl."""

    def watch():
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            metrics = run_dir / "metrics.jsonl"
            if metrics.exists() and metrics.read_text().strip():
                kill()
                return
            time.sleep(0.2)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_the_loop_on_a_server_it_starts_survives_the_server_dying(tiny_model, tmp_path, monkeypatch, caplog):
    """Two-plus iterations on `--vllm-server auto`: each samples from the adapter of the update before it, through
    the server's runtime LoRA loading; killed after iteration 1, the server is restarted and the run finishes."""
    from selfplay import loop
    from selfplay import vllm_server

    servers = []
    start = vllm_server.VLLMServer.start

    def record(server):  # the loop's server, so the test can kill it
        servers.append(server)
        return start(server)

    config = tiny_config(tiny_model, tmp_path, "auto", steps=3, vllm_server="auto")
    monkeypatch.setattr(vllm_server.VLLMServer, "start", record)
    with caplog.at_level(logging.WARNING, logger="selfplay.vllm_server"):
        kill_after_first_iteration(tmp_path / "auto", lambda: os.killpg(servers[-1].process.pid, signal.SIGKILL))
        results = loop.run_loop(config)
    run_dir = tmp_path / "auto"
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["iteration"] for m in metrics] == [1, 2, 3]
    assert [m["policy_version"] for m in metrics] == [0, 1, 2]
    assert len(servers) == 2  # the first one was killed and replaced, once for the requests in flight
    assert results["after"]["policy_version"] == 3
    assert "restarting it" in caplog.text
    assert "Application startup complete" in (run_dir / "vllm-server.log").read_text()
    assert all(server.process is None for server in servers)  # closed with the run


@pytest.mark.slow
def test_a_server_at_a_url_that_dies_stops_the_run_naming_it_with_no_half_iteration(tiny_model, tmp_path,
                                                                                     monkeypatch):
    from selfplay import loop, vllm_server
    from selfplay.runlog import read_status

    monkeypatch.setattr(vllm_server, "RECONNECT_WAITS", (0.5, 0.5))
    server = vllm_server.VLLMServer(tiny_model, lora_rank=16, log_path=tmp_path / "server.log")
    url = server.start()
    try:
        config = tiny_config(tiny_model, tmp_path, "url", steps=4, vllm_server=url)
        kill_after_first_iteration(tmp_path / "url", server.stop)
        with pytest.raises(PolicyError, match=f"the vLLM server at {url} does not answer"):
            loop.run_loop(config)
    finally:
        server.stop()
    run_dir = tmp_path / "url"
    status = read_status(run_dir)
    assert status["status"] == "crashed" and url in status["error"]
    done = [m["iteration"] for m in read_jsonl(run_dir / "metrics.jsonl")]
    assert done and done == list(range(1, len(done) + 1)) and len(done) < 4
    assert len(read_jsonl(run_dir / "samples.jsonl")) == len(done) * 2 * 4  # whole iterations only
    checkpoints = sorted(int(p.name.split("-")[1]) for p in (run_dir / "trainer").glob("checkpoint-*"))
    assert checkpoints[-1] == done[-1]  # resumable from the last whole iteration


def save_random_adapter(tiny_model, path):
    """A LoRA adapter of the tiny model with non-zero weights, saved to `path`; the PEFT model is returned."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if "lora_B" in name:
                weight.normal_(0, 0.05)
    model.save_pretrained(path)
    return model


@pytest.mark.slow
def test_a_server_that_dies_before_an_adapter_load_is_restarted_with_that_adapter(tiny_model, tmp_path):
    """The race CI met: the loop's server killed just before the next version's load. The load restarts it, the
    new version is served, and the old one is unloaded where it was loaded (never unloaded on the new server)."""
    from selfplay.vllm_server import ServerPolicy, VLLMServer

    save_random_adapter(tiny_model, tmp_path / "adapter")
    server = VLLMServer(tiny_model, lora_rank=16, log_path=tmp_path / "server.log")
    policy = ServerPolicy(server.start(), lora_rank=16, server=server)
    try:
        served = lambda: [m["id"] for m in policy._call("GET", "/v1/models")["data"]]  # noqa: E731
        policy.load_adapter(str(tmp_path / "adapter"), 1)
        policy.load_adapter(str(tmp_path / "adapter"), 2)
        assert "policy-v2" in served() and "policy-v1" not in served()
        first = server.process.pid
        os.killpg(first, signal.SIGKILL)
        server.process.wait()
        policy.load_adapter(str(tmp_path / "adapter"), 3)
        assert server.process.pid != first and policy.recoveries == 1
        assert "policy-v3" in served() and "policy-v2" not in served()
        [[completion]] = policy.generate([[1, 504, 3300]], n=1, max_tokens=4, temperature=1.0, seed=0)
        assert len(completion.completion_ids) == 4
    finally:
        policy.close()


@pytest.mark.slow
def test_served_logprobs_match_the_trainers_for_a_runtime_loaded_adapter(tiny_model, tmp_path):
    """The logprob agreement of test_loop, through the server: an adapter with non-zero weights is loaded at
    runtime; the logprobs the server reports equal the trainer's with that adapter, not the base model's."""
    import torch

    from selfplay.vllm_server import ServerPolicy, VLLMServer
    from test_loop import LOGPROB_TOLERANCE

    model = save_random_adapter(tiny_model, tmp_path / "adapter")
    prompt = [1, 504, 3300, 314, 253, 1109, 30]
    server = VLLMServer(tiny_model, lora_rank=16, log_path=tmp_path / "server.log")
    spawned, spawn = {}, server._spawn
    server._spawn = lambda argv, env: spawned.update(env) or spawn(argv, env)
    policy = ServerPolicy(server.start(), lora_rank=16, server=server)
    try:
        # its engine runs without dynamo on CPU, as the in-process one (selfplay.policy.CPU_ENGINE_ENV)
        assert spawned.get("TORCHDYNAMO_DISABLE") == "1"
        policy.load_adapter(str(tmp_path / "adapter"), 1)
        completion = policy.generate([prompt], n=1, max_tokens=8, temperature=1.0, seed=3)[0][0]
    finally:
        policy.close()

    ids = torch.tensor([prompt + completion.completion_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1]
        with model.disable_adapter():
            base_logits = model(ids).logits[0, len(prompt) - 1 : -1]
    picked = ids[0, len(prompt):, None]
    after = torch.log_softmax(logits.float(), -1).gather(-1, picked)[:, 0]
    before = torch.log_softmax(base_logits.float(), -1).gather(-1, picked)[:, 0]
    served = torch.tensor(completion.logprobs)
    assert len(completion.completion_ids) == 8
    assert (served - after).abs().max() < LOGPROB_TOLERANCE
    assert (served - before).abs().max() > 10 * LOGPROB_TOLERANCE


def test_an_unreachable_url_is_an_error_naming_it_after_a_bounded_wait(monkeypatch):
    from selfplay import vllm_server

    monkeypatch.setattr(vllm_server, "RECONNECT_WAITS", (0.1, 0.1))
    start = time.monotonic()
    with pytest.raises(PolicyError, match=r"the vLLM server at http://127.0.0.1:9 does not answer.*--vllm-server auto"):
        vllm_server.ServerPolicy("http://127.0.0.1:9", lora_rank=16, timeout=5)
    assert time.monotonic() - start < 30


@pytest.mark.parametrize("settings, message", [
    (dict(vllm_server="localhost:8000"), "give auto or a URL"),
    (dict(vllm_server="http://gpu:8000", warm_start=100), "Fine-tune first (selfplay sft)"),
    (dict(vllm_server="auto", full_finetune=True), "trl vllm-serve"),
])
def test_server_flags_that_cannot_work_are_refused_before_anything_starts(settings, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_config(**settings).validate()


@pytest.mark.slow
def test_a_server_the_loop_started_goes_with_it_even_after_kill_9(tiny_model, tmp_path):
    import subprocess
    import sys

    import psutil

    script = (f"from selfplay.vllm_server import VLLMServer\n"
              f"server = VLLMServer({tiny_model!r}, lora_rank=16, log_path={str(tmp_path / 'server.log')!r})\n"
              "server.start()\nprint(server.process.pid, flush=True)\nimport time; time.sleep(600)\n")
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        server = psutil.Process(int(owner.stdout.readline()))
        processes = [server, *server.children(recursive=True)]  # the API server and its engine core
        assert len(processes) >= 2
    finally:
        owner.kill()
        owner.wait()
    gone, alive = psutil.wait_procs(processes, timeout=60)
    assert alive == []


def test_a_server_that_cannot_load_adapters_is_an_error_that_says_how_to_start_it(tmp_path):
    """A stand-in HTTP server (fake: it lists a model and has no LoRA routes, as vLLM without
    VLLM_ALLOW_RUNTIME_LORA_UPDATING): loading an adapter names the URL and the flags the server needs."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from selfplay.vllm_server import ServerPolicy

    class FakeServerWithoutLoRA(BaseHTTPRequestHandler):
        def do_GET(self):
            self.answer(200, b'{"data": [{"id": "base"}]}')

        def do_POST(self):
            self.answer(404, b'{"detail": "Not Found"}')

        def answer(self, status, body):
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeServerWithoutLoRA)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        policy = ServerPolicy(url, lora_rank=16, timeout=5)
        assert policy.model == "base"
        with pytest.raises(PolicyError, match=rf"{url} refused /v1/load_lora_adapter: 404.*--enable-lora.*"
                                              "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"):
            policy.load_adapter(str(tmp_path), 1)
    finally:
        server.shutdown()

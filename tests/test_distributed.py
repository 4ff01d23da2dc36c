"""Two trainer processes under `accelerate launch` (gloo on CPU) with the tiny model, against one vLLM server."""

import json
import os
from pathlib import Path

import pytest
import requests
from dense_domain import DENSE

from selfplay.config import ConfigError, make_config

TESTS = str(Path(__file__).parent)


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.mark.slow
def test_two_trainer_processes_split_the_prompts_average_the_gradients_and_serve_one_adapter(tiny_model, tmp_path,
                                                                                            monkeypatch):
    from selfplay import loop
    from selfplay.vllm_server import VLLMServer

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [TESTS, os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("SELFPLAY_RANK_PROBE", str(tmp_path / "probe.jsonl"))
    server = VLLMServer(tiny_model, lora_rank=16, log_path=tmp_path / "server.log")
    url = server.start()
    try:
        config = make_config(domain=DENSE, model=tiny_model, warm_start=0, runs_dir=str(tmp_path), run="ddp",
                             steps=2, prompts_per_step=2, num_generations=4, micro_batch_size=4, learning_rate=0.05,
                             train_positions=8, eval_positions=2, engine_limit="depth=4", num_processes=2,
                             vllm_server=url, reward=["rank_probe:rank_probe=0"])
        config.validate()
        results = loop.run_loop(config)
        served = {model["id"] for model in requests.get(f"{url}/v1/models", timeout=10).json()["data"]}
    finally:
        server.stop()
    run_dir = tmp_path / "ddp"

    calls = [call for call in read_jsonl(tmp_path / "probe.jsonl") if call["rank"] is not None]
    by_rank = {rank: [call["prompts"] for call in calls if call["rank"] == rank] for rank in ("0", "1")}
    assert len(by_rank["0"]) == len(by_rank["1"]) == 2  # one reward call per process and iteration
    for mine, theirs in zip(by_rank["0"], by_rank["1"]):  # the same iteration: different prompts
        assert mine and theirs and not set(mine) & set(theirs)

    report = json.loads((run_dir / "distributed.json").read_text())
    assert report["processes"] == 2 and report["backend"] == "gloo"
    digests = report["weights_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]  # different prompts, same weights: averaged gradients

    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["iteration"] for m in metrics] == [1, 2] and [m["policy_version"] for m in metrics] == [0, 1]
    assert len(read_jsonl(run_dir / "samples.jsonl")) == 2 * 2 * 4  # both processes' samples, logged once
    assert {p.name for p in (run_dir / "adapters").iterdir()} == {"v1", "v2", "final"}
    assert "policy-v2" in served and results["after"]["policy_version"] == 2


@pytest.mark.parametrize("settings, message", [
    (dict(num_processes=2, full_finetune=True), "train a LoRA adapter"),
    (dict(num_processes=2, eval_every=5), "before and after only"),
    (dict(num_processes=2, positions="random:1,selfplay:1"), "use --num-processes 1"),
    (dict(num_processes=2, accelerate_config="nope.yaml"), "choose ddp, zero2, fsdp"),
    (dict(num_processes=3), "--micro-batch-size x --num-processes must divide"),
])
def test_distributed_settings_that_cannot_work_are_refused(settings, message):
    with pytest.raises(ConfigError, match=message):
        make_config(**settings).validate()


@pytest.mark.parametrize("name", ["ddp", "zero2", "fsdp"])
def test_the_shipped_accelerate_configs_load(name):
    from accelerate.commands.config.config_args import load_config_from_file

    from selfplay.distributed import accelerate_config_file

    config = load_config_from_file(str(accelerate_config_file(name)))
    assert config.num_machines == 1 and config.distributed_type.value in ("MULTI_GPU", "DEEPSPEED", "FSDP")

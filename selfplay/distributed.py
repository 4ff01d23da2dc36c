"""The GRPO iterations on several trainer processes: `selfplay loop --num-processes N` (`make loop GPUS=N`).

The loop's own process keeps what comes before and after training: the run dir, the held-out evaluations, the warm
start, the games, and the vLLM server (--vllm-server, or one it starts). The iterations run in N processes that
`accelerate launch` starts with `--accelerate-config` (configs/accelerate/{ddp,zero2,fsdp}.yaml, or a file of
yours; on a CPU box the same code runs on gloo):

    accelerate launch --config_file configs/accelerate/ddp.yaml --num_processes N \
        -m selfplay.distributed RUN_DIR MODEL SERVER_URL [CHECKPOINT]

Each process builds the trainer from the run's config.json. TRL gives each its share of every iteration's prompts,
which it samples on the shared server; the gradients are averaged (DDP); the first process saves each adapter and
loads it into the server, and the others sample from it once it is there. The first also writes the run's logs,
which the loop's process shows on its dashboard as they come. At the end each process reports a digest of its trainable weights into distributed.json:
after an averaged update they are the same.
"""

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "accelerate"


class DistributedError(RuntimeError):
    """The trainer processes failed; the message says where their output is."""


def accelerate_config_file(name: str) -> Path:
    from selfplay.config import ConfigError

    path = CONFIGS / f"{name}.yaml" if name in ("ddp", "zero2", "fsdp") else Path(name)
    if not path.is_file():
        raise ConfigError(f"--accelerate-config {name!r}: choose ddp, zero2, fsdp or give a YAML file")
    return path


def launch(config, run_dir: Path, model_path: str, url: str, checkpoint, dashboard) -> None:
    """Run the iterations in `config.num_processes` trainer processes, showing each on `dashboard` as the first
    process logs it; returns once they have all finished."""
    import torch

    command = [sys.executable, "-m", "accelerate.commands.launch",
               "--config_file", str(accelerate_config_file(config.accelerate_config)),
               "--num_processes", str(config.num_processes), "--num_machines", "1",
               *([] if torch.cuda.is_available() else ["--num_cpu_threads_per_process", "1"]),
               "-m", "selfplay.distributed", str(run_dir), model_path, url, str(checkpoint or "")]
    try:
        process = subprocess.Popen(command)
        with dashboard:
            follow = RunLogFollower(run_dir)
            while process.poll() is None:
                time.sleep(0.5)
                follow(dashboard)
            follow(dashboard)
        status = process.returncode
    except KeyboardInterrupt:
        process.terminate()
        process.wait()
        raise
    if status:
        raise DistributedError(f"the {config.num_processes} trainer processes failed (exit status {status}); "
                               "their errors are above, or in the run's log.txt")


class RunLogFollower:
    """Feeds the iterations that the first trainer process appends to metrics.jsonl (with their samples) to a
    dashboard, whole lines only."""

    def __init__(self, run_dir: Path):
        self.files = {name: [run_dir / name, 0] for name in ("metrics.jsonl", "samples.jsonl")}
        self.samples: list[dict] = []

    def new_rows(self, name: str) -> list[dict]:
        path, offset = self.files[name]
        if not path.exists():
            return []
        with open(path, "rb") as source:
            source.seek(offset)
            text = source.read()
        whole = text[: text.rfind(b"\n") + 1]
        self.files[name][1] = offset + len(whole)
        return [json.loads(line) for line in whole.splitlines()]

    def __call__(self, dashboard) -> None:
        self.samples += self.new_rows("samples.jsonl")
        for row in self.new_rows("metrics.jsonl"):
            dashboard.update(row, [s for s in self.samples if s["iteration"] == row["iteration"]])
            self.samples = [s for s in self.samples if s["iteration"] > row["iteration"]]


def weights_digest(model) -> str:
    digest = hashlib.sha256()
    for name, weight in sorted((n, p) for n, p in model.named_parameters() if p.requires_grad):
        digest.update(name.encode())
        digest.update(weight.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def main(run_dir: str, model_path: str, url: str, checkpoint: str = "") -> None:
    """One trainer process (rank) of `launch`."""
    import torch
    from accelerate import PartialState
    from accelerate.utils import gather_object
    from transformers import AutoTokenizer

    from selfplay.domains import get_domain
    from selfplay.loop import train_iterations
    from selfplay.plugins import load_reward, plug_in
    from selfplay.resume import checkpoint_iteration, saved_config
    from selfplay.vllm_server import ServerPolicy

    state = PartialState(cpu=not torch.cuda.is_available())
    run_dir = Path(run_dir)
    config = saved_config(run_dir)
    torch.manual_seed(config.seed)
    domain = get_domain(config.domain)
    eval_rows = domain.eval_rows(config)
    rows = domain.train_rows(config, eval_rows)
    plugged = [load_reward(spec) for spec in config.reward]  # checked by the loop's process already
    rewards = domain.rewards(config)
    try:
        reward_funcs, reward_weights = plug_in(plugged, config.rewards_only, rewards.funcs, rewards.weights,
                                               run_dir / "reward_failure.jsonl")
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        policy = ServerPolicy(url, lora_rank=config.lora_rank)
        checkpoint = Path(checkpoint) if checkpoint else None
        if checkpoint is not None:  # the loop's process loaded it into the server
            policy.follow(str(checkpoint), checkpoint_iteration(checkpoint))
        trainer = train_iterations(config, domain, model_path, run_dir, policy, tokenizer, reward_funcs,
                                   reward_weights, rows, eval_rows, checkpoint, None,
                                   writes_logs=state.is_main_process)
        digests = gather_object([weights_digest(trainer.model)])
        if state.is_main_process:
            (run_dir / "distributed.json").write_text(json.dumps(
                {"processes": state.num_processes, "backend": state.backend, "weights_digests": digests}) + "\n")
    finally:
        rewards.close()


if __name__ == "__main__":
    main(*sys.argv[1:])

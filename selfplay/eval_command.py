"""`selfplay eval DOMAIN`: a model, or a trained LoRA adapter on it, scored on a domain's held-out sets or on a file
of your own, every figure with its 95% interval; two policies compared on the same rows and samples; the adapters a
run saved, scored in order (a learning curve).

    selfplay eval code --adapter my-run                              # a run: its final adapter, on its base model
    selfplay eval code --adapter my-run --against base               # the paired difference, "no change" in the noise
    selfplay eval code --file HumanEval.jsonl.gz --samples 10 --temperature 0.8     # pass@1 and pass@10, unbiased
    selfplay eval chess --file puzzles.csv --limit 200 --games 10 --elo 1350,1600
    selfplay eval chess --run my-run --checkpoints                   # the model and each adapter the run kept

The flags are the same for every domain, the domain's own follow (`selfplay eval DOMAIN --help`). The output goes
to runs/<out>/: eval.json (the figures), results.jsonl (per row: the answers and their scores; code: each answer's
verdict and its program's output, cut short), games.pgn (chess --games). Bad input (a task file without tests, a
reference solution failing its own tests with --check-file, an adapter of another base model, --samples 0) is one
line and exit 2, before anything is written.
"""

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from selfplay.config import LOOP_DEFAULTS, ConfigError, ReadsDomainSettings
from selfplay.domains import get_domain
from selfplay.model import resolve_model
from selfplay.runlog import append_jsonl, create_run_dir, write_json
from selfplay.terminal import output_console

CUT = 2000  # characters of an answer's program output kept in results.jsonl


@dataclass
class EvalConfig(ReadsDomainSettings):
    domain: str = "chess"
    """(the DOMAIN argument) chess, code, or an installed domain"""
    model: str | None = None
    """HF model directory or hub id; unset: the base model of --adapter's run, else the built-in
    SmolLM2-135M-Instruct"""
    adapter: str | None = None
    """a LoRA adapter to serve on the model: its directory, or a run (name, unique prefix or path) for its final
    adapter"""
    against: str | None = None
    """also score this policy on the same rows and samples, and print the paired difference: another adapter or run,
    or base (the model alone)"""
    file: str | None = None
    """rows of your own (chess: EPD, PGN, FEN list or puzzle CSV; code: HumanEval or MBPP JSONL; other domains: a
    JSONL of rows); unset: the domain's held-out sets"""
    limit: int | None = None
    """score the first N rows only"""
    samples: int = 1
    """answers per row: 1 answers greedily, K > 1 samples K at --temperature (and reports pass@1 and pass@K with the
    unbiased estimator, for the domain's success metric)"""
    temperature: float | None = None
    """sampling temperature; unset: greedy with --samples 1, else the domain's training temperature"""
    run: str | None = None
    """with --checkpoints: the run whose saved adapters to score"""
    checkpoints: bool = False
    """score the run's model and each adapter it kept (selfplay loop --keep-adapters) in order, on one set: a table,
    and a PNG beside the run"""
    check_file: bool = False
    """first check that each row's reference solution (code: HumanEval's canonical_solution, MBPP's code) passes
    its own tests"""
    out: str | None = None
    """output directory under --runs-dir (default: eval__<domain>__<policy>__<time>)"""
    runs_dir: str = "runs"
    """where runs are found and output directories created"""
    seed: int = 0
    """seed for sampled answers and retries"""
    max_completion_length: int | None = None
    """max new tokens per answer; unset: the domain's"""
    skip_bad: bool = False
    """skip (and count) malformed lines of --file instead of stopping at the first"""

    settings: object = None
    """(not a flag) the domain's settings dataclass"""

    def __post_init__(self):
        domain = get_domain(self.domain)
        if self.settings is None:
            self.settings = domain.Settings()
        for name, value in domain.defaults.items():
            if hasattr(self.settings, name) and getattr(self.settings, name) is None:
                setattr(self.settings, name, value)
        if self.max_completion_length is None:
            self.max_completion_length = domain.defaults.get("max_completion_length",
                                                             LOOP_DEFAULTS["max_completion_length"])

    def validate(self) -> None:
        if self.samples < 1:
            raise ConfigError(f"--samples must be at least 1, got {self.samples}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be at least 1, got {self.limit}")
        if self.max_completion_length < 1:
            raise ConfigError(f"--max-completion-length must be at least 1, got {self.max_completion_length}")
        if self.temperature is not None and self.temperature < 0:
            raise ConfigError(f"--temperature must be >= 0, got {self.temperature}")
        if self.checkpoints and not self.run:
            raise ConfigError("--checkpoints needs --run RUN: the run whose adapters to score")
        if self.run and not self.checkpoints:
            raise ConfigError("--run names the run for --checkpoints; for its final adapter use --adapter RUN")
        if self.checkpoints and (self.adapter or self.against):
            raise ConfigError("--checkpoints scores the run's own adapters: drop --adapter and --against")
        if hasattr(self.settings, "validate"):
            self.settings.validate(self)

    def sampling_temperature(self) -> float:
        if self.temperature is not None:
            return self.temperature
        return 0.0 if self.samples == 1 else get_domain(self.domain).defaults.get("temperature", 1.0)


# --- policies: a model and an adapter ------------------------------------------------------------------------------

def resolve_adapter(spec: str, runs_dir: str) -> tuple[Path, Path | None]:
    """(adapter directory, its run directory or None) for an adapter directory or a run's name, prefix or path."""
    from selfplay.runs import resolve

    path = Path(spec)
    if (path / "adapter_config.json").exists():
        return path, None
    try:
        run_dir = resolve(runs_dir, spec)
    except Exception:  # RunDirError and friends: neither an adapter nor a run
        raise ConfigError(f"{spec}: neither a LoRA adapter directory (adapter_config.json) nor a run in "
                          f"{runs_dir}") from None
    adapter = run_dir / "adapters" / "final"
    if not (adapter / "adapter_config.json").exists():
        raise ConfigError(f"{spec}: the run {run_dir.name} has no final LoRA adapter (unfinished, or a full "
                          "fine-tune: give its model with --model runs/<run>/final)")
    return adapter, run_dir


def run_base_model(run_dir: Path) -> str:
    """The model a run's adapters were trained on: its warm-start model, else the model it started from."""
    warm = run_dir / "warm" / "model"
    if warm.exists():
        return str(warm)
    return json.loads((run_dir / "config.json").read_text())["model_path"]


def adapter_rank(adapter: Path) -> int:
    try:
        return int(json.loads((adapter / "adapter_config.json").read_text())["r"])
    except (OSError, ValueError, KeyError) as error:
        raise ConfigError(f"{adapter}: not a PEFT LoRA adapter directory ({error})") from None


def check_adapter_fits(adapter: Path, model_path: str) -> None:
    """ConfigError unless every LoRA matrix of `adapter` fits a layer of the model (an adapter trained on another
    base model names layers it lacks, or has other shapes). Reads shapes only: the model is built on the meta
    device."""
    import torch
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_path))
    layers = dict(model.named_modules())
    weights = adapter / "adapter_model.safetensors"
    if not weights.exists():
        raise ConfigError(f"{adapter}: no adapter_model.safetensors")
    with safe_open(weights, "pt") as tensors:
        for key in tensors.keys():
            name, _, part = key.removeprefix("base_model.model.").rpartition(".lora_")
            layer = layers.get(name)
            shape = tensors.get_slice(key).get_shape()
            fits = layer is not None and hasattr(layer, "in_features") and (
                shape[1] == layer.in_features if part.startswith("A") else shape[0] == layer.out_features)
            if not fits:
                raise ConfigError(f"{adapter}: an adapter of another base model ({name} does not fit {model_path})")


@dataclass
class Policy:
    """A policy to score: the model alone (adapter None) or with a LoRA adapter; `name` is how tables call it."""

    name: str
    adapter: Path | None
    version: int  # the LoRA id vLLM serves it under (0: the model alone)


def policy_for(spec: str | None, runs_dir: str, version: int) -> Policy:
    if spec is None or spec == "base":
        return Policy("base", None, 0)
    adapter, run_dir = resolve_adapter(spec, runs_dir)
    return Policy(run_dir.name if run_dir else str(adapter), adapter, version)


def serve(vllm_policy, policy: Policy) -> None:
    """Make vLLM answer as `policy`."""
    if policy.adapter is None:
        vllm_policy.lora, vllm_policy.version = None, 0
    else:
        vllm_policy.load_adapter(str(policy.adapter), policy.version)


# --- the command ---------------------------------------------------------------------------------------------------

def run_eval(config: EvalConfig, console: Console | None = None, on_run_dir=None) -> dict:
    console = console or output_console()
    domain = get_domain(config.domain)
    if config.checkpoints:
        from selfplay.runs import resolve

        run_dir = resolve(config.runs_dir, config.run)
        policies = [Policy("base", None, 0)] + [Policy(p.name, p, i + 1) for i, p in enumerate(saved_adapters(run_dir))]
        model_path = resolve_model(config.model or run_base_model(run_dir))
        label = run_dir.name
    else:
        policies = [policy_for(config.adapter, config.runs_dir, 1)]
        if config.against is not None:
            policies.append(policy_for(config.against, config.runs_dir, 2))
        adapter_run = resolve_adapter(config.adapter, config.runs_dir)[1] if config.adapter else None
        model_path = resolve_model(config.model or (run_base_model(adapter_run) if adapter_run else
                                                    "SmolLM2-135M-Instruct"))
        label = policies[0].name if config.adapter else Path(model_path.rstrip("/")).name
    ranks = {adapter_rank(p.adapter) for p in policies if p.adapter is not None}
    for p in policies:
        if p.adapter is not None:
            check_adapter_fits(p.adapter, model_path)
    rows = domain.file_rows(config, config.file) if config.file else domain.eval_rows(config)
    rows = rows[: config.limit] if config.limit else rows
    if not rows and not domain.plays_after_training(config):
        raise ConfigError("nothing to evaluate: no rows (and no games)")
    rewards = domain.rewards(config)
    try:
        if config.check_file:
            check_references(domain, rows, rewards, config)
        out = create_run_dir(config.runs_dir, config.out or f"eval__{domain.name}__{label}__{time.strftime('%Y%m%d-%H%M%S')}")
        if on_run_dir:
            on_run_dir(out)
        result = _score(config, console, domain, rows, rewards, policies, model_path, max(ranks, default=None), out)
        result["model"], result["file"] = model_path, config.file
        write_json(out / "eval.json", result)
        if config.checkpoints:
            plot_checkpoints(result["checkpoints"], domain, run_dir / "checkpoints.png", label)
            console.print(f"curve: {run_dir / 'checkpoints.png'}", highlight=False)
        console.print(f"results: {out}", highlight=False)
        return result
    finally:
        rewards.close()


def saved_adapters(run_dir: Path) -> list[Path]:
    """The adapters a run kept (adapters/v<iteration>), in order of iteration; the final one when none is left."""
    kept = sorted((p for p in (run_dir / "adapters").glob("v*") if p.name[1:].isdigit()), key=lambda p: int(p.name[1:]))
    final = run_dir / "adapters" / "final"
    if not kept and final.exists():
        kept = [final]
    if not kept:
        raise ConfigError(f"{run_dir.name}: no saved adapters in {run_dir / 'adapters'}")
    return kept


def _score(config, console, domain, rows, rewards, policies, model_path, lora_rank, out) -> dict:
    from transformers import AutoTokenizer

    from selfplay.evaluate import compare, eval_table, evaluate
    from selfplay.policy import VLLMPolicy

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    temperature = config.sampling_temperature()
    console.print(f"model {model_path}", highlight=False)
    vllm_policy = VLLMPolicy(model_path, lora_rank=lora_rank, seed=config.seed,
                             answer_tokens=config.max_completion_length)
    try:
        results = []
        for policy in policies:
            serve(vllm_policy, policy)
            console.print(f"scoring {policy.name} on {len(rows)} rows"
                          f"{f', {config.samples} answers each at temperature {temperature}' if config.samples > 1 else ''}",
                          highlight=False)
            result = evaluate(vllm_policy, tokenizer, rows, rewards.funcs, max_tokens=config.max_completion_length,
                              stop=domain.stop_strings(config), tools=domain.tools(config), samples=config.samples,
                              temperature=temperature, seed=config.seed,
                              references=lambda rows, scores: domain.eval_references(rows, scores, rewards))
            if config.samples > 1 and domain.SUCCESS in result.get("sample_scores", {}):
                result["pass_at_k"] = pass_at_k_table(rows, result["sample_scores"][domain.SUCCESS], config.samples)
            results.append(result)
        main = results[0]
        metrics = {**domain.EVAL_METRICS}
        if config.checkpoints:
            summary = {"checkpoints": [{"name": p.name, "adapter": str(p.adapter) if p.adapter else None,
                                        "sets": r["sets"]} for p, r in zip(policies, results)]}
            console.print(checkpoint_table(summary["checkpoints"], domain))
        elif len(results) == 2:
            change = compare(rows, results[1], main)
            console.print(eval_table(f"A = {policies[0].name}, B = {policies[1].name} (95% intervals; the change "
                                     "A - B is paired over the same rows)", metrics, main, before=results[1],
                                     change=change, columns=("B", "A")))
            summary = {"policy": policies[0].name, "against": policies[1].name, "result": main,
                       "against_result": results[1], "change": change}
        else:
            console.print(eval_table(f"{policies[0].name} (95% intervals)", metrics, main))
            summary = {"policy": policies[0].name, "result": main}
        for policy, result in zip(policies, results):
            if "pass_at_k" in result:
                print_pass_at_k(console, policy.name, domain.SUCCESS, result["pass_at_k"])
        details = domain.eval_details(rows, main.get("answers") or [[c] for c in main["completions"]], rewards)
        write_results(out / "results.jsonl", rows, main, details, domain.SAMPLE_COLUMNS)
        if domain.plays_after_training(config) and not config.checkpoints:
            serve(vllm_policy, policies[0])
            summary |= domain.after_training(config, vllm_policy, tokenizer, out, console)
        return summary
    finally:
        vllm_policy.close()


def check_references(domain, rows, rewards, config) -> None:
    """--check-file: ConfigError naming the rows whose reference solution fails its own tests."""
    failing = domain.check_references(rows, rewards)
    if failing:
        shown = ", ".join(failing[:5]) + (f" and {len(failing) - 5} more" if len(failing) > 5 else "")
        raise ConfigError(f"--check-file {config.file}: the reference solution fails its own tests in {shown}")


# --- pass@k --------------------------------------------------------------------------------------------------------

def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of HumanEval (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), from n samples of which c
    passed."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def pass_at_k_table(rows: list[dict], sample_scores: list[list], samples: int) -> dict:
    """{f"pass@{k}": [mean, low, high]} for k = 1 and `samples` (and 10 between), over the rows with a score."""
    from selfplay.stats import mean_interval

    ks = sorted({1, *(k for k in (10,) if k < samples), samples})
    table = {}
    for k in ks:
        values = [pass_at_k(len(s), sum(v >= 1.0 for v in s), k) for s in sample_scores if None not in s]
        if values:
            table[f"pass@{k}"] = list(mean_interval(values))
    return table


def print_pass_at_k(console, name: str, metric: str, table: dict) -> None:
    cells = "  ".join(f"{k} {mean:.3f} [{low:.2f}, {high:.2f}]" for k, (mean, low, high) in table.items())
    console.print(f"[bold]{name}[/] {metric}: {cells}", highlight=False)


# --- output --------------------------------------------------------------------------------------------------------

def write_results(path: Path, rows: list[dict], result: dict, details: list[dict], columns: tuple = ()) -> None:
    """One line per row: its set, id, prompt (cut), the row's `columns` (the domain's SAMPLE_COLUMNS: chess's fen),
    answers, per-answer scores and the domain's details."""
    answers = result.get("answers") or [[c] for c in result["completions"]]
    sample_scores = result.get("sample_scores") or {m: [[v] for v in values] for m, values in result["scores"].items()}
    lines = []
    for i, row in enumerate(rows):
        prompt = row["prompt"][-1]["content"] if isinstance(row["prompt"], list) else row["prompt"]
        lines.append({"set": row.get("set") or "all", "id": row.get("id", i), "prompt": prompt[:CUT],
                      **{column: row[column] for column in columns if column in row}, "answers": answers[i],
                      "scores": {m: values[i] for m, values in sample_scores.items()},
                      **details[i]})
    append_jsonl(path, lines)


def checkpoint_table(checkpoints: list[dict], domain):
    from rich.table import Table

    table = Table(title="checkpoints (95% intervals)", title_justify="left", box=None, pad_edge=False)
    sets = list(dict.fromkeys(name for c in checkpoints for name in c["sets"]))
    headline = next(iter(domain.EVAL_METRICS))
    table.add_column("checkpoint")
    for name in sets:
        table.add_column(f"{name} {domain.EVAL_METRICS[headline]}")
    for c in checkpoints:
        cells = []
        for name in sets:
            figure = c["sets"].get(name, {}).get(headline)
            cells.append(f"{figure[0]:.3f} [{figure[1]:.2f}, {figure[2]:.2f}]" if figure else "-")
        table.add_row(c["name"], *cells)
    return table


def plot_checkpoints(checkpoints: list[dict], domain, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    headline = next(iter(domain.EVAL_METRICS))
    figure, axes = plt.subplots(figsize=(7, 4))
    names = [c["name"] for c in checkpoints]
    for name in dict.fromkeys(n for c in checkpoints for n in c["sets"]):
        points = [(i, c["sets"][name][headline]) for i, c in enumerate(checkpoints) if headline in c["sets"].get(name, {})]
        if points:
            xs, figures = zip(*points)
            means = [f[0] for f in figures]
            axes.errorbar(xs, means, yerr=[[m - f[1] for m, f in zip(means, figures)],
                                           [f[2] - m for m, f in zip(means, figures)]], marker="o", capsize=3,
                          label=name)
    axes.set_xticks(range(len(names)), names, rotation=30)
    axes.set_ylabel(domain.EVAL_METRICS[headline])
    axes.set_title(f"{title}: held-out {domain.EVAL_METRICS[headline]} by checkpoint (95% intervals)")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


"""`selfplay runs`: look at runs after the fact, or while they go, from their directories alone.

    selfplay runs list                                   # every run: domain, model, progress, held-out, status, age
    selfplay runs show RUN                               # settings that differ from the defaults, curves, evaluation
    selfplay runs samples RUN [--iteration N] [--best|--worst] [--grep TEXT]
    selfplay runs compare RUN RUN...                     # side by side: differing settings, final metrics
    selfplay runs plot RUN... [--out FILE.png]           # matplotlib curves
    selfplay runs tail RUN                               # follow a live run from another terminal

RUN is a run name or a unique prefix of one. Reading never changes a run directory. A file that is missing or
half-written (a jsonl line cut short) is one clear error naming the file and line.
"""

import dataclasses
import json
import os
import time
from pathlib import Path

from rich.table import Table
from rich.text import Text

from selfplay.config import make_config
from selfplay.dashboard import sparkline
from selfplay.runlog import RunDirError

CURVES = [("reward", "reward/mean"), ("loss", "train/loss"), ("KL", "train/kl"),
          ("zero-spread", "reward/zero_std_frac")]
# the held-out figure a run is summed up by: (set, metric, label)
HEADLINE_EVAL = {"chess": ("playouts", "skill", "skill"), "code": ("generated", "unit_test_reward", "pass@1")}


def run_dirs(runs_dir: str) -> list[Path]:
    root = Path(runs_dir)
    return sorted(p for p in root.iterdir() if (p / "config.json").exists()) if root.is_dir() else []


def resolve(runs_dir: str, name: str) -> Path:
    """The run called `name`, or the only one whose name starts with it."""
    exact = Path(runs_dir) / name
    if exact.is_dir():
        if not (exact / "config.json").exists():
            raise RunDirError(f"{exact / 'config.json'} is missing: not a run directory, or one whose start was cut "
                              "short")
        return exact
    matches = [p for p in run_dirs(runs_dir) if p.name.startswith(name)]
    if not matches:
        raise RunDirError(f"no run {name!r} in {runs_dir}/ (selfplay runs list shows them)")
    if len(matches) > 1:
        raise RunDirError(f"{name!r} is ambiguous in {runs_dir}/: " + ", ".join(p.name for p in matches))
    return matches[0]


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunDirError(f"{path} is missing") from None
    except json.JSONDecodeError as error:
        raise RunDirError(f"{path}: not valid JSON ({error.msg} at line {error.lineno}); the file is half-written or "
                          "not from selfplay") from None


def read_jsonl(path: Path, *, live: bool = False) -> list[dict]:
    """The rows of a jsonl file ([] when it does not exist yet). A bad line is an error naming it; with `live`, a last
    line without its newline is a write in progress and is left out."""
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")
    if live and not text.endswith("\n"):
        lines = lines[:-1]
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            raise RunDirError(f"{path}:{number}: not a complete JSON line (cut short by a crash?); the run's other "
                              "files are intact") from None
    return rows


@dataclasses.dataclass
class Run:
    path: Path
    config: dict
    status: dict
    metrics: list[dict]
    evals: list[dict]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def state(self) -> str:
        """running, finished, crashed, interrupted; a "running" run whose process is gone was killed: crashed."""
        state = self.status.get("status")
        if state is None:  # runs from before status.json
            return "finished" if (self.path / "eval.json").exists() else "unknown"
        if state == "running" and not pid_alive(self.status.get("pid")):
            return "crashed"
        return state

    def headline(self, label: str) -> float | None:
        """The headline held-out figure "before" training, or at the latest evaluation since ("after")."""
        set_name, key, _ = HEADLINE_EVAL.get(self.config.get("domain"), (None, None, None))
        for row in self.evals if label == "before" else reversed(self.evals):
            if (row.get("label") == "before") == (label == "before"):
                in_set = row.get("sets", {}).get(set_name, {}).get(key)
                return in_set[0] if in_set else row.get(key)
        return None


def load(path: Path) -> Run:
    """A run from its files. While its process runs, a last line without its newline is a write in progress."""
    config = read_json(path / "config.json")
    status = read_json(path / "status.json") if (path / "status.json").exists() else {}
    live = status.get("status") == "running" and pid_alive(status.get("pid"))
    return Run(path, config, status, read_jsonl(path / "metrics.jsonl", live=live),
               read_jsonl(path / "eval.jsonl", live=live))


def pid_alive(pid) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def changed_settings(config: dict) -> dict:
    """The settings that differ from what `selfplay loop --domain D` would use."""
    defaults = make_config(domain=config.get("domain", "chess")).as_dict()
    skip = {"run", "model_path"}
    return {k: v for k, v in config.items() if k not in skip and k in defaults and defaults[k] != v}


def fmt(value, pattern="{:.3f}") -> str:
    return "-" if value is None else pattern.format(value)


def list_runs(runs_dir: str, console) -> None:
    paths = run_dirs(runs_dir)
    table = Table(box=None, header_style="bold", pad_edge=False)
    for header in ("run", "domain", "model", "iterations", "held-out", "status", "age"):
        table.add_column(header, justify="right" if header in ("iterations", "age") else "left", no_wrap=True,
                         min_width=max([len(header)] + [len(p.name) for p in paths if header == "run"]))
    problems = []
    for path in paths:
        try:
            run = load(path)
        except RunDirError as error:
            table.add_row(path.name, "", "", "", "", Text("unreadable", style="red"), "")
            problems.append(str(error))
            continue
        label = HEADLINE_EVAL.get(run.config.get("domain"), ("", "", ""))[2]
        before, after = run.headline("before"), run.headline("after")
        held_out = f"{label} {fmt(before)} -> {fmt(after)}" if before is not None else "-"
        when = run.status.get("updated") or (path / "config.json").stat().st_mtime
        style = {"finished": "green", "crashed": "red", "interrupted": "yellow", "running": "cyan"}.get(run.state, "")
        table.add_row(run.name, run.config.get("domain", "?"), Path(str(run.config.get("model", "?"))).name,
                      f"{len(run.metrics)}/{run.config.get('steps', '?')}", held_out, Text(run.state, style=style),
                      age(time.time() - when))
    if not table.row_count:
        console.print(f"no runs in {runs_dir}/")
        return
    console.print(table)
    for problem in problems:
        console.print(Text(problem, style="red"))


def show(runs_dir: str, name: str, console) -> None:
    from selfplay.domains import get_domain
    from selfplay.evaluate import eval_table

    run = load(resolve(runs_dir, name))
    console.print(f"[bold]{run.name}[/]  {run.config.get('domain')}  {run.state}  "
                  f"{len(run.metrics)}/{run.config.get('steps')} iterations", highlight=False)
    changed = changed_settings(run.config)
    console.print("[bold]settings[/] (differing from the defaults): " +
                  (", ".join(f"{k}={v}" for k, v in changed.items()) or "none"), highlight=False)
    if run.metrics:
        headline = get_domain(run.config["domain"]).headline
        for label, key in [*CURVES[:1], (headline.split("/")[-1], headline), *CURVES[1:]]:
            values = [m.get(key) for m in run.metrics]
            known = [v for v in values if v is not None]
            if known:
                console.print(f"{label:>18} {fmt(known[0])} {sparkline(values, 60)} {fmt(known[-1])}  "
                              f"(min {fmt(min(known))}, max {fmt(max(known))})", highlight=False)
    evaluation = run.path / "eval.json"
    if evaluation.exists():
        results = read_json(evaluation)
        metrics = get_domain(run.config["domain"]).EVAL_METRICS
        console.print(eval_table("held-out before -> after (95% intervals)", metrics, results["after"],
                                 results["before"], results.get("change")))
    elif run.evals:
        console.print(f"held-out: {len(run.evals)} evaluation(s) so far: " + ", ".join(e.get("label", "?")
                                                                                      for e in run.evals))


def samples(runs_dir: str, name: str, console, *, iteration: int | None = None, order: str | None = None,
            grep: str | None = None, limit: int = 20) -> None:
    run = load(resolve(runs_dir, name))
    rows = read_jsonl(run.path / "samples.jsonl", live=run.state == "running")
    if iteration is not None:
        rows = [r for r in rows if r.get("iteration") == iteration]
    if grep:
        rows = [r for r in rows if grep.lower() in (r.get("completion") or "").lower()
                or grep.lower() in json.dumps(r.get("prompt")).lower()]
    if order:
        rows = sorted(rows, key=lambda r: r.get("advantage") or 0.0, reverse=order == "best")
    if not rows:
        console.print("no samples match")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for header in ("iter", "advantage", "rewards", "completion"):
        table.add_column(header, justify="right" if header in ("iter", "advantage") else "left",
                         overflow="fold" if header == "completion" else "ellipsis")
    for row in rows[:limit]:
        rewards = " ".join(f"{k.removesuffix('_reward')}={v:.2f}" for k, v in row.get("rewards", {}).items()
                           if v is not None)
        table.add_row(str(row.get("iteration")), fmt(row.get("advantage"), "{:+.2f}"), rewards,
                      " ".join((row.get("completion") or "").split())[:200])
    console.print(table)
    console.print(f"{min(limit, len(rows))} of {len(rows)} samples shown (--limit)")


def compare(runs_dir: str, names: list[str], console) -> None:
    runs = [load(resolve(runs_dir, name)) for name in names]
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("")
    for run in runs:
        table.add_column(run.name, justify="right")
    keys = sorted({k for run in runs for k in run.config} - {"run", "model_path"})
    for key in keys:
        values = [run.config.get(key) for run in runs]
        if len({json.dumps(v, sort_keys=True) for v in values}) > 1:
            table.add_row(key, *[str(v) for v in values])
    table.add_section()
    table.add_row("status", *[run.state for run in runs])
    table.add_row("iterations", *[f"{len(r.metrics)}/{r.config.get('steps')}" for r in runs])
    table.add_row("last reward", *[fmt(r.metrics[-1].get("reward/mean") if r.metrics else None) for r in runs])
    for when in ("before", "after"):
        table.add_row(f"held-out {when}", *[fmt(r.headline(when)) for r in runs])
    console.print(table)


def plot(runs_dir: str, names: list[str], out: str | None, console) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [load(resolve(runs_dir, name)) for name in names]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    for ax, (label, key) in zip(axes.flat, CURVES):
        for run in runs:
            points = [(m["iteration"], m.get(key)) for m in run.metrics if m.get(key) is not None]
            if points:
                ax.plot(*zip(*points), label=run.name, marker=".")
        ax.set_title(label)
        ax.set_xlabel("iteration")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    target = Path(out) if out else runs[0].path / "curves.png"
    fig.savefig(target, dpi=100)
    plt.close(fig)
    console.print(f"wrote {target}")
    return target


def tail(runs_dir: str, name: str, console, *, poll_s: float = 1.0) -> None:
    """Print each iteration's line as the run writes it, until the run stops."""
    path = resolve(runs_dir, name)
    shown = 0
    while True:
        run = load(path)
        for row in run.metrics[shown:]:
            console.print(f"iteration {row['iteration']}/{run.config.get('steps')}  "
                          f"reward {fmt(row.get('reward/mean'))}"
                          f"  zero-spread {fmt(row.get('reward/zero_std_frac'), '{:.2f}')}  loss "
                          f"{fmt(row.get('train/loss'), '{:+.4f}')}  step {fmt(row.get('time/step_s'), '{:.1f}')}s",
                          highlight=False)
        shown = len(run.metrics)
        if run.state != "running":
            console.print(f"{run.name}: {run.state}")
            return
        time.sleep(poll_s)

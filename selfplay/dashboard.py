"""The live view of a run. In a terminal: a rich dashboard (progress with ETA, the latest iterations, sparklines of
the reward and the domain's headline rate, where the last iteration's seconds went, the best and worst sample of the
last group, warnings). Through a pipe or
into a file: one plain line per iteration, flushed.

    with Dashboard(steps, headline="reward/legal_move_reward", weights={"engine_reward": 1.0}) as dashboard:
        dashboard.update(metrics_row, samples)      # after every iteration (RunLogger calls it)
        dashboard.evaluated("iteration 10", 0.41)   # a held-out headline figure, for the divergence warning
        dashboard.warn("vLLM generation failed; restarting")
"""

import logging
from collections import Counter
from statistics import mean

from rich.console import Group
from rich.live import Live
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from selfplay import step_time
from selfplay.terminal import OUR_LOGGERS, TerminalLogHandler, output_console

BARS = "▁▂▃▄▅▆▇█"
TABLE_ROWS = 6  # latest iterations shown
ZERO_SPREAD_RUN = 3  # iterations in a row with every group at zero spread before the warning
COLLAPSE_SHARE = 0.5  # one answer taking more than this share of an iteration's samples
COLUMNS = [  # (header, metrics key, format)
    ("iter", "iteration", "{:d}"),
    ("reward", "reward/mean", "{:.3f}"),
    (None, None, "{:.3f}"),  # the headline rate: header and key from the domain
    ("zero-spread", "reward/zero_std_frac", "{:.2f}"),
    ("KL", "train/kl", "{:.4f}"),
    ("loss", "train/loss", "{:+.4f}"),
    ("tok/s", "gen/tokens_per_s", "{:.0f}"),
    ("rewards/s", "reward/evals_per_s", "{:.0f}"),
    ("step s", "time/step_s", "{:.1f}"),
]


def sparkline(values: list[float | None], width: int = 40) -> str:
    values = [v for v in values if v is not None][-width:]
    if not values:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(BARS[min(len(BARS) - 1, int((v - low) / span * len(BARS)))] for v in values)


def fmt(value, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def step_split(row: dict) -> str:
    """Where the iteration's seconds went (selfplay.step_time), the parts that took any: "prefill 0.4  decode 1.2 ..."."""
    return "  ".join(f"{part} {row[f'time/{part}_s']:.1f}" for part in step_time.PARTS
                     if row.get(f"time/{part}_s") is not None and round(row[f"time/{part}_s"], 1) != 0)


class Dashboard:
    def __init__(self, total_steps: int, *, headline: str, weights: dict[str, float] | None = None, console=None,
                 done: int = 0, plugged: list[str] = ()):
        self.console = console or output_console()
        # the plugged-in rewards (selfplay.plugins) get a column each, after the headline
        self.columns = [*COLUMNS[:3], *((name, f"reward/{name}", "{:.3f}") for name in plugged), *COLUMNS[3:]]
        self.weights = weights or {}  # reward name -> weight: a sample's reward is the weighted sum
        self.headline = headline  # metric key shown beside the reward, e.g. reward/legal_move_reward
        self.headline_name = headline.split("/")[-1].removesuffix("_reward")
        self.total = total_steps
        self.rows: list[dict] = []
        self.samples: list[dict] = []
        self.warnings: list[str] = []
        self.evals: list[tuple[str, float, int]] = []  # (label, held-out headline, iterations done)
        self.live = None
        self.progress = Progress(
            TextColumn("[bold]iteration"), MofNCompleteColumn(), BarColumn(), TimeElapsedColumn(), TextColumn("ETA"),
            TimeRemainingColumn(), console=self.console,
        )
        self.task = self.progress.add_task("loop", total=total_steps, completed=done)  # done: before a resume

    def __enter__(self):
        if self.console.is_terminal:  # third-party prints must not go through rich: they belong in the log
            self.live = Live(self.render(), console=self.console, refresh_per_second=4, redirect_stdout=False,
                             redirect_stderr=False)
            self.live.start()
        self.handler = WarningsPanel(self)
        for name in OUR_LOGGERS:
            logging.getLogger(name).addHandler(self.handler)
        TerminalLogHandler.warnings_elsewhere += 1
        return self

    def __exit__(self, *exc):
        TerminalLogHandler.warnings_elsewhere -= 1
        for name in OUR_LOGGERS:
            logging.getLogger(name).removeHandler(self.handler)
        if self.live:
            self.live.update(self.render())
            self.live.stop()

    def update(self, row: dict, samples: list[dict] | None = None) -> None:
        self.rows.append(row)
        self.samples = samples or []
        self._check(row)
        self.progress.update(self.task, completed=row["iteration"])
        if self.live:
            self.live.update(self.render())
        else:
            cells = [f"{header or self.headline_name} {fmt(row.get(key or self.headline), pattern)}"
                     for header, key, pattern in self.columns[1:]]
            split = step_split(row)
            self.console.print(f"iteration {row['iteration']}/{self.total}  " + "  ".join(cells) +
                               (f"  ({split})" if split else ""), highlight=False, soft_wrap=True)
            self.console.file.flush()

    def evaluated(self, label: str, value: float | None) -> None:
        """A held-out evaluation on the way: training reward rising while this falls is worth a warning."""
        if value is None:
            return
        done = len(self.rows)
        if self.evals:
            last_label, last_value, last_done = self.evals[-1]
            since = [r["reward/mean"] for r in self.rows[last_done:] if r.get("reward/mean") is not None]
            earlier = [r["reward/mean"] for r in self.rows[:last_done] if r.get("reward/mean") is not None]
            if not earlier:  # the first interval: its first half against its second
                earlier, since = since[: len(since) // 2], since[len(since) // 2:]
            if earlier and since and mean(since) > mean(earlier) and value < last_value:
                self.warn(f"training reward rising while held-out {self.headline_name} fell: "
                          f"{last_value:.3f} ({last_label}) -> {value:.3f} ({label})")
        self.evals.append((label, value, done))

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        if self.live:
            self.live.update(self.render())
        else:
            self.console.print(Text(f"warning: {message}", style="yellow"))

    def _check(self, row: dict) -> None:
        recent = [r.get("reward/zero_std_frac") for r in self.rows[-ZERO_SPREAD_RUN:]]
        if len(recent) == ZERO_SPREAD_RUN and all(v == 1.0 for v in recent):
            if not (len(self.rows) > ZERO_SPREAD_RUN and self.rows[-ZERO_SPREAD_RUN - 1].get("reward/zero_std_frac")
                    == 1.0):  # once per run of zero-spread iterations
                self.warn(f"no learning signal: every group had zero reward spread for {ZERO_SPREAD_RUN} iterations "
                          f"(from {row['iteration'] - ZERO_SPREAD_RUN + 1})")
        answers = Counter(s["completion"].strip() for s in self.samples)
        if answers:
            answer, count = answers.most_common(1)[0]
            if count / len(self.samples) > COLLAPSE_SHARE:
                self.warn(f"collapse at iteration {row['iteration']}: {answer[:40]!r} is {count} of "
                          f"{len(self.samples)} samples")

    def render(self) -> Group:
        table = Table(box=None, pad_edge=False, header_style="bold")
        for header, _, _ in self.columns:
            table.add_column(header or self.headline_name, justify="right")
        for row in self.rows[-TABLE_ROWS:]:
            table.add_row(*[fmt(row.get(key or self.headline), pattern) for _, key, pattern in self.columns])
        parts = [self.progress, table]
        if self.rows:
            lines = Text()
            lines.append(f"{'reward':>14} ", style="bold")
            lines.append(sparkline([r.get("reward/mean") for r in self.rows]) + "\n", style="cyan")
            lines.append(f"{self.headline_name:>14} ", style="bold")
            lines.append(sparkline([r.get(self.headline) for r in self.rows]), style="green")
            split = step_split(self.rows[-1])
            if split:
                lines.append(f"\n{'step seconds':>14} ", style="bold")
                lines.append(split)
            parts.append(lines)
        if self.samples:
            group = self.samples[-min(len(self.samples), 8):]  # TRL orders an iteration's samples group by group
            ranked = sorted(group, key=lambda s: s.get("advantage") or 0.0)
            text = Text()
            for label, sample in (("best", ranked[-1]), ("worst", ranked[0])):
                reward = sum(self.weights.get(name, 0.0) * v for name, v in sample["rewards"].items() if v is not None)
                answer = " ".join(sample["completion"].split())[:100]
                text.append(f"{label:>5} ", style="bold")
                text.append(f"reward {reward:.3f} advantage {sample.get('advantage', 0.0):+.2f}  {answer}\n")
            text.rstrip()
            parts.append(Panel(text, title="last group", title_align="left", border_style="dim"))
        if self.warnings:
            parts.append(Panel(Text("\n".join(self.warnings[-5:]), style="yellow"), title="warnings",
                               title_align="left", border_style="yellow"))
        return Group(*parts)


class WarningsPanel(logging.Handler):
    """Our WARNING log records (engine, sandbox or vLLM restarts, skipped input) into the dashboard's warnings."""

    def __init__(self, dashboard: Dashboard):
        super().__init__(logging.WARNING)
        self.dashboard = dashboard

    def emit(self, record: logging.LogRecord) -> None:
        self.dashboard.warn(record.getMessage())

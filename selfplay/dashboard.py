"""The live terminal display of a run: iteration k/N, reward, the domain's headline rate, ETA."""

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


PIPE_WIDTH = 120  # rich assumes 80 columns when stdout is not a terminal: the held-out tables would wrap every row


def output_console() -> Console:
    """The console our lines go to: the terminal's width, or PIPE_WIDTH through a pipe or into a file."""
    console = Console()
    return console if console.is_terminal else Console(width=PIPE_WIDTH)


class Dashboard:
    def __init__(self, total_steps: int, *, headline: str, console: Console | None = None):
        self.headline = headline  # metric key shown beside the reward, e.g. reward/legal_move_reward
        self.progress = Progress(
            TextColumn("[bold]iteration"),
            MofNCompleteColumn(),
            BarColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
        )
        self.task = self.progress.add_task("loop", total=total_steps, status="generating...")

    def update(self, row: dict) -> None:
        def fmt(value):
            return "-" if value is None else f"{value:.3f}"

        status = (
            f"reward {fmt(row.get('reward/mean'))}  {self.headline.split('/')[-1]} {fmt(row.get(self.headline))}  "
            f"zero-spread {fmt(row.get('reward/zero_std_frac'))}  step {fmt(row.get('time/step_s'))}s"
        )
        self.progress.update(self.task, completed=row["iteration"], status=status)

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

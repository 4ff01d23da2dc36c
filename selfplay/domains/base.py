"""The Domain interface: what the loop needs from a task domain. The built-in chess and code domains implement it,
and so does a domain of your own (`selfplay loop --domain my_package.module:MyDomain`, or the name of an entry point
in the group `selfplay.domains`):

    @dataclass
    class ArithmeticSettings:
        problems: int = 500
        \"\"\"training problems\"\"\"                      # a field per flag: `selfplay loop --domain X --help`

    class Arithmetic(Domain):
        name = "arithmetic"
        Settings = ArithmeticSettings
        EVAL_METRICS = {"exact_answer": "exact"}          # held-out metric -> label, the headline first
        defaults = {"max_completion_length": 32}         # loop settings this domain changes when left unset

        def train_rows(self, config, held_out): ...      # [{"prompt": [messages], <columns>...}]
        def eval_rows(self, config): ...                 # the same shape; each row's "set" names its held-out set
        def rewards(self, config): return Rewards([exact_answer], [1.0])

`config` is the loop's `LoopConfig`; the domain's own settings are `config.settings` (and read through `config` too:
`config.problems`). Rewards have TRL's signature `f(prompts, completions, **columns) -> list[float | None]`.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass, field


@dataclass
class NoSettings:
    """A domain without flags of its own."""


@dataclass
class Rewards:
    """A domain's reward functions with their weights (0: logged, not trained on), and what to close at the end
    (the engine pool, the sandbox: resources the rewards own)."""

    funcs: list
    weights: list[float]
    resources: list = field(default_factory=list)

    def close(self) -> None:
        for resource in self.resources:
            resource.close()


class Domain(ABC):
    """Subclass it: `name`, `EVAL_METRICS`, `train_rows`, `eval_rows` and `rewards` are required; the rest have
    defaults."""

    name = ""
    Settings: type = NoSettings  # a dataclass: its fields are the domain's flags, each with a docstring
    EVAL_METRICS: dict[str, str] = {}  # held-out metric (a reward's name, or a reference's) -> label, headline first
    HEADLINE: str | None = None  # metrics key shown beside the reward in the progress (default: EVAL_METRICS' first)
    SUCCESS: str | None = None  # a 0/1 held-out metric: `selfplay eval --samples K` reports its pass@1 and pass@K
    SAMPLE_COLUMNS: tuple[str, ...] = ()  # row columns written beside each training sample in samples.jsonl
    defaults: dict = {}  # LoopConfig fields this domain sets when left unset (max_completion_length, temperature...)
    presets: dict[str, dict] = {}  # --preset NAME -> settings (the loop's and this domain's) it sets when left unset

    @abstractmethod
    def train_rows(self, config, held_out: list[dict]) -> list[dict]:
        """Training rows `{"prompt": [chat messages], <columns the rewards read>...}`, none of `held_out`'s."""

    @abstractmethod
    def eval_rows(self, config) -> list[dict]:
        """Held-out rows of the same shape, scored before and after training; a row's "set" names its set."""

    @abstractmethod
    def rewards(self, config) -> Rewards:
        """The reward functions (TRL's signature), their weights, and the resources they own."""

    def sample_rows(self, config, count: int) -> list[dict]:
        """A few rows to try a reward on (`selfplay rewards check`): by default the first training rows."""
        return self.train_rows(config, [])[:count]

    def file_rows(self, config, path: str) -> list[dict]:
        """Rows from a file of the user's (`selfplay eval --file`). By default a JSONL file, one row per line:
        `{"prompt": text or chat messages, <the columns its rewards read>...}`; ConfigError at the first bad line."""
        import json
        from pathlib import Path

        from selfplay.config import ConfigError

        rows = []
        for number, line in enumerate(Path(path).read_text(errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as error:
                raise ConfigError(f"{path}:{number}: not JSON ({error})") from None
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), (str, list)):
                raise ConfigError(f"{path}:{number}: expected an object with a prompt (text or chat messages)")
            rows.append({"set": Path(path).stem, **row})
        if not rows:
            raise ConfigError(f"{path}: no rows")
        return rows

    def eval_details(self, rows: list[dict], answers: list[list[str]], rewards: Rewards) -> list[dict]:
        """More per-row output for `selfplay eval`'s results.jsonl (code: each answer's verdict and program output)."""
        return [{} for _ in rows]

    def check_references(self, rows: list[dict], rewards: Rewards) -> list[str]:
        """`selfplay eval --check-file`: the ids of rows whose reference answer fails its own rewards."""
        from selfplay.config import ConfigError

        raise ConfigError(f"--check-file: the {self.name} domain has no reference answers to check")

    def stop_strings(self, config) -> list[str] | None:
        """Strings that end a sample (None: the end-of-sequence token or the token budget only)."""
        return None

    def tools(self, config) -> list:
        """Tools the policy may call inside its answers (`selfplay.tools.Tool`: the environment appends each call's
        result and the answer goes on); none by default."""
        return []

    def training_data(self, config, rows: list[dict], held_out: list[dict], policy, tokenizer, stats: dict) -> tuple:
        """(TRL train dataset, extra trainer callbacks): by default the fixed training rows."""
        from datasets import Dataset

        return Dataset.from_list(rows), []

    def eval_references(self, rows: list[dict], scores: dict[str, list], rewards: Rewards) -> dict[str, list]:
        """Extra per-row held-out metrics from the policy's scores (chess: reference players, skill; searched with
        the engines of `rewards`): metric -> one value per row."""
        return {}

    def warm_start(self, config, model_path: str, run_dir, rewards: Rewards, console, *, policy, tokenizer,
                   rows: list[dict]) -> str:
        """Fine-tune before GRPO (`--warm-start N`); returns the fine-tuned model's directory. Close the served `policy`
        once done with it: the loop serves the fine-tuned model anew."""
        from selfplay.config import ConfigError

        raise ConfigError(f"--warm-start: the {self.name} domain has no warm start; use --warm-start 0")

    def plays_after_training(self, config) -> bool:
        """Whether `after_training` has work (chess: --games)."""
        return False

    def after_training(self, config, policy, tokenizer, run_dir, console) -> dict:
        """More results once the held-out evaluation after training is done, with the trained policy served."""
        return {}

    def describe(self, config, rewards: Rewards) -> str:
        """One line for the run's header: how the rewards are computed."""
        return ", ".join(getattr(f, "__name__", type(f).__name__) for f in rewards.funcs)

    @property
    def headline(self) -> str:
        """The metrics key the progress shows beside the reward: HEADLINE, else the first held-out metric's."""
        return self.HEADLINE or f"reward/{next(iter(self.EVAL_METRICS))}"

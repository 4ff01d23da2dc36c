"""A selfplay domain in 50 lines, from outside the package: arithmetic word problems, scored by the exact answer.

    pip install -e examples/arithmetic         # registers the entry points `arithmetic` (domain), `exact_answer`
    selfplay loop --domain arithmetic          # or: selfplay loop --domain selfplay_arithmetic:Arithmetic
    selfplay loop --domain arithmetic --calculator    # the model may write <calc>7*12</calc>, the environment adds =84
"""

import random
import re
from dataclasses import dataclass

from selfplay.domains import Domain, Rewards
from selfplay_arithmetic.calculator import CALCULATOR

TEMPLATES = [  # (problem, its answer from the numbers a, b, c)
    ("{who} has {a} apples and buys {b} bags of {c} apples. How many apples does {who} have now?",
     lambda a, b, c: a + b * c),
    ("A bus carries {a} people. At a stop {b} get off and {c} get on. How many people are on the bus?",
     lambda a, b, c: a - b + c),
    ("{who} reads {a} pages a day for {b} days, then {c} more. How many pages has {who} read?",
     lambda a, b, c: a * b + c),
]
SYSTEM = "Solve the problem. End with the line: Answer: <number>"
CALCULATOR_HINT = " To compute, write <calc>expression</calc> and its value follows, as in <calc>7*12</calc>=84."
NUMBER = re.compile(r"-?\d+")


def problems(count: int, seed: int, max_number: int, calculator: bool) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        text, answer = rng.choice(TEMPLATES)
        a = rng.randint(2, max_number)
        b, c = rng.randint(1, a), rng.randint(1, max_number)
        problem = text.format(who=rng.choice(["Ann", "Bo", "Chen", "Dara"]), a=a, b=b, c=c)
        system = SYSTEM + CALCULATOR_HINT * calculator
        rows.append({"prompt": [{"role": "system", "content": system}, {"role": "user", "content": problem}],
                     "answer": answer(a, b, c)})
    return rows


def exact_answer(prompts, completions, answer, **kwargs):
    """1 when the last number of the completion is the answer."""
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [float(bool(found) and int(found[-1]) == a) for found, a in zip(map(NUMBER.findall, texts), answer)]


@dataclass
class ArithmeticSettings:
    problems: int = 500
    """training problems"""
    eval_problems: int = 100
    """held-out problems, from a seed never trained on"""
    max_number: int = 20
    """the largest number in a problem"""
    calculator: bool = False
    """let the model call a calculator inside its answer: <calc>7*12</calc> is followed by =84"""


class Arithmetic(Domain):
    """Arithmetic word problems, scored by the exact answer."""

    name = "arithmetic"
    Settings = ArithmeticSettings
    EVAL_METRICS = {"exact_answer": "exact"}
    SUCCESS = "exact_answer"  # selfplay eval arithmetic --samples K: pass@1 and pass@K of the exact answer
    defaults = {"max_completion_length": 64}

    def train_rows(self, config, held_out):
        seen = {row["prompt"][-1]["content"] for row in held_out}
        return [row for row in problems(config.problems, config.seed, config.max_number, config.calculator)
                if row["prompt"][-1]["content"] not in seen]

    def eval_rows(self, config):
        return problems(config.eval_problems, 1_000_003, config.max_number, config.calculator)

    def rewards(self, config):
        return Rewards([exact_answer], [1.0])

    def tools(self, config):
        return [CALCULATOR] if config.calculator else []

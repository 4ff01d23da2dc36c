"""Generated code tasks: families of small function-writing problems, each instance with randomised hidden tests.

    tasks = generated_tasks(200, seed=0)             # cycles over FAMILIES; deterministic for a seed

A family makes one random instance from a `random.Random`: the statement's parameters (the divisor, the rotation,
the separator) and ~8 test inputs (edge cases among them) are drawn, the expected outputs come from running the
family's reference solution here (trusted code), and the first two inputs become the prompt's `>>>` examples. The
random examples make nearly every prompt distinct (the statement alone, e.g. "divisible by 3", does repeat), so a
held-out set can be generated with a seed of its own, dropping the training tasks whose prompt is a held-out one.
"""

import copy
import hashlib
import random
import textwrap
from collections.abc import Callable
from dataclasses import dataclass

from selfplay.domains.code_tasks import Task

SHOWN = 2  # test inputs shown as `>>>` examples in a generated prompt
_TRIES = 100  # draws of a family before generated_tasks gives up finding a prompt not made yet


@dataclass(frozen=True)
class Family:
    """A kind of generated task: its category ("string", "list"...) and `make(rng) -> Task`."""

    category: str
    make: Callable[[random.Random], Task]


FAMILIES: dict[str, Family] = {}


def generated_tasks(count: int, *, seed: int) -> list[Task]:
    """`count` generated tasks cycling over FAMILIES in order, no prompt twice; the same list for the same seed."""
    rng = random.Random(seed)
    names = list(FAMILIES)
    tasks: list[Task] = []
    prompts: set[str] = set()
    for index in range(count):
        name = names[index % len(names)]
        for _ in range(_TRIES):
            task = FAMILIES[name].make(rng)
            if task.prompt not in prompts:
                break
        else:
            raise ValueError(f"family {name} made only prompts already made in {_TRIES} draws: too few instances")
        prompts.add(task.prompt)
        tasks.append(task)
    return tasks


# Generated families. Each returns (signature, statement, body of the reference solution, test inputs); the first
# SHOWN inputs are the prompt's examples, so they are ordinary ones and the edge cases come after.
Spec = tuple[str, str, str, list[tuple]]
WORDS = ("apple", "banana", "cherry", "dog", "eagle", "fig", "grape", "house", "island", "jungle", "kite", "lemon",
         "moon", "night", "ocean", "pear", "queen", "river", "sun", "tree", "umbrella", "violet", "water", "yellow",
         "zebra", "level", "noon", "a", "is", "the", "of", "sky")
NAMES = ("ann", "bob", "cid", "dee", "eve", "fay", "gus", "hal")


def _family(category: str) -> Callable[[Callable[[random.Random], Spec]], Callable[[random.Random], Spec]]:
    def register(spec: Callable[[random.Random], Spec]) -> Callable[[random.Random], Spec]:
        FAMILIES[spec.__name__] = Family(category, lambda rng: _build(spec.__name__, *spec(rng)))
        return spec
    return register


def _build(family: str, signature: str, statement: str, body: str, inputs: list[tuple]) -> Task:
    name = signature.removeprefix("def ").split("(")[0]
    code = textwrap.indent(body.strip("\n"), "    ") + "\n"
    namespace: dict = {}
    exec(f"{signature}\n{code}", namespace)  # our own reference solution
    inputs = list({repr(args): args for args in inputs}.values())
    cases = [(", ".join(map(repr, args)), repr(namespace[name](*copy.deepcopy(args)))) for args in inputs]
    doc = "\n    ".join(textwrap.wrap(statement, 96))
    examples = "".join(f"    >>> {name}({args})\n    {result}\n" for args, result in cases[:SHOWN])
    prompt = f'{signature}\n    """{doc}\n{examples}    """\n'
    tests = "def check(candidate):\n" + "".join(f"    assert candidate({args}) == {result}\n" for args, result in cases)
    digest = hashlib.sha256((prompt + tests).encode()).hexdigest()[:12]
    return Task(f"generated/{family}/{digest}", prompt, tests, name, "generated", prompt + code)


def _numbers(rng: random.Random, lo: int = -20, hi: int = 20, size: int | None = None) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(rng.randint(2, 8) if size is None else size)]


def _number_lists(rng: random.Random, lo: int = -20, hi: int = 20) -> list[tuple]:
    """Six random lists with the empty and a one-element list after the first two."""
    lists = [_numbers(rng, lo, hi) for _ in range(6)]
    return [(numbers,) for numbers in lists[:2] + [[], [rng.randint(lo, hi)]] + lists[2:]]


def _sentence(rng: random.Random, most: int = 6) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(2, most))]
    return " ".join(word.capitalize() if rng.random() < 0.2 else word for word in words)


def _lower_sentences(rng: random.Random, edge: list[str]) -> list[tuple]:
    return [(_sentence(rng).lower(),) for _ in range(2)] + [(text,) for text in edge] + [
        (_sentence(rng).lower(),) for _ in range(4)]


@_family("string")
def reverse_string(rng):
    inputs = [(rng.choice(WORDS),), (_sentence(rng),), ("",), ("x",)] + [(_sentence(rng),) for _ in range(4)]
    return "def reverse_string(text: str) -> str:", "Return `text` with its characters in reverse order.", \
        "return text[::-1]", inputs


@_family("string")
def count_vowels(rng):
    inputs = [(_sentence(rng),) for _ in range(2)] + [("",), ("rhythm",), ("AEIOU",)] + [
        (_sentence(rng),) for _ in range(3)]
    return "def count_vowels(text: str) -> int:", \
        "Return how many vowels (a, e, i, o, u, in lower or upper case) `text` contains.", \
        'return sum(1 for c in text.lower() if c in "aeiou")', inputs


@_family("string")
def remove_letter(rng):
    letter = rng.choice("aeinorst")
    return "def remove_letter(text: str) -> str:", \
        f"Return `text` with every lower-case '{letter}' removed; all other characters stay as they are.", \
        f"return text.replace({letter!r}, '')", _lower_sentences(rng, ["", letter * 3, letter.upper() + "x"])


@_family("string")
def is_palindrome(rng):
    def palindrome() -> str:
        half = rng.choice(WORDS)
        text = half + half[::-1][rng.randint(0, 1):]
        return text.capitalize() if rng.random() < 0.3 else text

    plain = [word for word in WORDS if word != word[::-1]]
    inputs = [(palindrome(),), (rng.choice(plain),), ("",), ("a",), ("ab",)] + [
        (palindrome(),), (rng.choice(plain),), (palindrome(),)]
    return "def is_palindrome(text: str) -> bool:", \
        "Return True if `text` reads the same backwards as forwards, ignoring upper and lower case, else False.", \
        "text = text.lower()\nreturn text == text[::-1]", inputs


@_family("string")
def caesar_shift(rng):
    shift = rng.randint(1, 25)
    return "def caesar_shift(text: str) -> str:", \
        f"Shift every lower-case letter of `text` {shift} places forward in the alphabet, wrapping around from 'z' " \
        "to 'a', and return the result; other characters stay unchanged.", \
        f"return ''.join(chr((ord(c) - 97 + {shift}) % 26 + 97) if 'a' <= c <= 'z' else c for c in text)", \
        _lower_sentences(rng, ["", "xyz!"])


@_family("string")
def run_length_encode(rng):
    letters = rng.sample("abcxyz", 3)

    def runs() -> str:
        return "".join(rng.choice(letters) * rng.randint(1, 4) for _ in range(rng.randint(2, 5)))

    inputs = [(runs(),), (runs(),), ("",), (letters[0],), (letters[1] * 5,)] + [(runs(),) for _ in range(3)]
    return "def run_length_encode(text: str) -> str:", \
        "Return the run-length encoding of `text`: every run of one repeated character becomes that character " \
        "followed by the length of the run.", \
        "from itertools import groupby\nreturn ''.join(c + str(len(list(run))) for c, run in groupby(text))", inputs


@_family("list")
def sum_list(rng):
    return "def sum_list(numbers: list[int]) -> int:", \
        "Return the sum of the numbers in `numbers` (0 for an empty list).", "return sum(numbers)", _number_lists(rng)


@_family("list")
def sum_divisible(rng):
    k = rng.randint(2, 9)

    def numbers() -> list[int]:  # multiples of k on purpose, so the sums are rarely all 0
        size = rng.randint(2, 8)
        return [k * rng.randint(-5, 5) if rng.random() < 0.4 else rng.randint(-20, 20) for _ in range(size)]

    inputs = [(numbers(),), (numbers(),), ([],), ([k],), ([k + 1],)] + [(numbers(),) for _ in range(3)]
    return "def sum_divisible(numbers: list[int]) -> int:", \
        f"Return the sum of the numbers in `numbers` that are divisible by {k}.", \
        f"return sum(n for n in numbers if n % {k} == 0)", inputs


@_family("list")
def count_greater(rng):
    limit = rng.randint(-5, 10)
    inputs = _number_lists(rng) + [([limit, limit + 1, limit - 1],)]
    return "def count_greater(numbers: list[int]) -> int:", \
        f"Return how many numbers in `numbers` are greater than {limit}.", \
        f"return sum(1 for n in numbers if n > {limit})", inputs


@_family("list")
def kth_largest(rng):
    k = rng.randint(1, 3)
    ordinal = ("1st", "2nd", "3rd")[k - 1]
    inputs = [(_numbers(rng, size=rng.randint(k + 1, 8)),) for _ in range(2)] + [
        (_numbers(rng, size=k),), (_numbers(rng, -30, -1, size=k + 2),), ([4] * k + [2, 7],)] + [
        (_numbers(rng, size=rng.randint(k, 8)),) for _ in range(3)]
    return "def kth_largest(numbers: list[int]) -> int:", \
        f"Return the {ordinal} largest number in `numbers`, counting repeated numbers separately (the 1st largest " \
        f"is the maximum). `numbers` has at least {k} element{'s' if k > 1 else ''}.", \
        f"return sorted(numbers, reverse=True)[{k - 1}]", inputs


@_family("list")
def rotate_left(rng):
    shift = rng.randint(1, 6)
    inputs = [(_numbers(rng, 0, 9, size=rng.randint(shift + 1, 9)),) for _ in range(2)] + [
        ([],), ([5],), (_numbers(rng, 0, 9, size=shift),)] + [(_numbers(rng, 0, 9),) for _ in range(3)]
    return "def rotate_left(items: list[int]) -> list[int]:", \
        f"Return `items` rotated left by {shift} positions: moving the first element to the end, {shift} times " \
        "over (so a short list wraps around). An empty list stays empty.", \
        f"if not items:\n    return []\nshift = {shift} % len(items)\nreturn items[shift:] + items[:shift]", inputs


@_family("list")
def running_sum(rng):
    return "def running_sum(numbers: list[int]) -> list[int]:", \
        "Return the running totals of `numbers`: element i of the result is the sum of numbers[0] to numbers[i].", \
        "total, totals = 0, []\nfor n in numbers:\n    total += n\n    totals.append(total)\nreturn totals", \
        _number_lists(rng, -9, 9)


@_family("list")
def remove_duplicates(rng):
    return "def remove_duplicates(numbers: list[int]) -> list[int]:", \
        "Return `numbers` without repeats: each number is kept at its first occurrence, in the original order.", \
        "return list(dict.fromkeys(numbers))", _number_lists(rng, 0, 5)


@_family("arithmetic")
def clamp(rng):
    lo = rng.randint(-10, 5)
    hi = lo + rng.randint(1, 20)
    inputs = [(rng.randint(lo - 10, hi + 10),), (rng.randint(lo, hi),), (lo - 1,), (hi + 1,), (lo,), (hi,), (
        rng.randint(lo - 100, lo - 2),), (rng.randint(hi + 2, hi + 100),)]
    return "def clamp(x: int) -> int:", \
        f"Return `x` limited to the range from {lo} to {hi}: {lo} when `x` is smaller, {hi} when `x` is larger, " \
        "else `x` itself.", f"return max({lo}, min({hi}, x))", inputs


@_family("arithmetic")
def digit_sum(rng):
    inputs = [(rng.randint(10, 99999),), (rng.randint(-9999, -10),), (0,), (7,), (-5,)] + [
        (rng.randint(-10**6, 10**6),) for _ in range(3)]
    return "def digit_sum(n: int) -> int:", \
        "Return the sum of the decimal digits of `n`, ignoring the sign of a negative `n`.", \
        "return sum(int(d) for d in str(abs(n)))", inputs


@_family("arithmetic")
def polynomial(rng):
    a, b, c = rng.randint(1, 5), rng.randint(-9, 9), rng.randint(-9, 9)
    expression = f"{a} * x * x" + "".join(
        f" {'+' if v > 0 else '-'} {abs(v)}{term}" for v, term in ((b, " * x"), (c, "")) if v)
    inputs = [(rng.randint(-10, 10),) for _ in range(2)] + [(0,), (1,), (-1,)] + [
        (rng.randint(-100, 100),) for _ in range(3)]
    return "def polynomial(x: int) -> int:", f"Return the value of {expression} for the integer `x`.", \
        f"return {expression}", inputs


@_family("number theory")
def is_prime(rng):
    primes = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97]
    composite = rng.choice([4, 6, 8, 9, 10, 12, 15, 21, 25, 27, 33, 35, 39, 49, 51, 57, 77, 91])
    inputs = [(rng.choice(primes),), (composite,), (0,), (1,), (-rng.choice(primes),), (2,)] + [
        (rng.choice(primes),), (rng.randint(2, 50) * rng.randint(2, 20),)]
    return "def is_prime(n: int) -> bool:", \
        "Return True if `n` is a prime number, else False (numbers below 2 are not prime).", \
        "if n < 2:\n    return False\nreturn all(n % d for d in range(2, int(n ** 0.5) + 1))", inputs


@_family("number theory")
def count_divisors(rng):
    inputs = [(rng.randint(2, 60),) for _ in range(2)] + [(1,), (rng.choice([13, 17, 19, 23]),), (36,)] + [
        (rng.randint(2, 500),) for _ in range(3)]
    return "def count_divisors(n: int) -> int:", \
        "Return how many positive whole numbers divide `n` without remainder (`n` is at least 1).", \
        "return sum(1 for d in range(1, n + 1) if n % d == 0)", inputs


@_family("number theory")
def nth_term(rng):
    a, b = rng.randint(0, 5), rng.randint(1, 7)
    inputs = [(rng.randint(2, 8),) for _ in range(2)] + [(0,), (1,), (2,)] + [
        (rng.randint(3, 25),) for _ in range(3)]
    return "def nth_term(n: int) -> int:", \
        f"A sequence starts with {a} and {b}, and every later term is the sum of the two terms before it. Return " \
        f"the term at index `n` (index 0 is {a}, index 1 is {b}).", \
        f"x, y = {a}, {b}\nfor _ in range(n):\n    x, y = y, x + y\nreturn x", inputs


@_family("dict")
def char_counts(rng):
    inputs = [(rng.choice(WORDS),), (_sentence(rng, 3),), ("",), ("aaa",), ("a b",)] + [
        (_sentence(rng, 3),) for _ in range(3)]
    return "def char_counts(text: str) -> dict[str, int]:", \
        "Return a dict that maps each character of `text`, spaces excluded, to the number of times it occurs.", \
        "counts = {}\nfor c in text:\n    if c != ' ':\n        counts[c] = counts.get(c, 0) + 1\nreturn counts", \
        inputs


@_family("dict")
def word_lengths(rng):
    inputs = [(rng.sample(WORDS, rng.randint(2, 4)),) for _ in range(2)] + [([],), ([rng.choice(WORDS)],)] + [
        (rng.sample(WORDS, rng.randint(1, 6)),) for _ in range(4)]
    return "def word_lengths(words: list[str]) -> dict[str, int]:", \
        "Return a dict that maps each word in `words` to its number of characters.", \
        "return {word: len(word) for word in words}", inputs


@_family("dict")
def key_of_max(rng):
    def scores(size: int) -> dict[str, int]:
        return {name: rng.randint(0, 9) for name in rng.sample(NAMES, size)}

    inputs = [(scores(rng.randint(2, 5)),) for _ in range(2)] + [(scores(1),), ({"zed": 3, "amy": 3},)] + [
        (scores(rng.randint(2, 8)),) for _ in range(4)]
    return "def key_of_max(scores: dict[str, int]) -> str:", \
        "Return the key of `scores` with the largest value; when several keys share it, the one that comes first " \
        "in alphabetical order. `scores` is never empty.", \
        "return min(scores, key=lambda key: (-scores[key], key))", inputs


@_family("parsing")
def parse_pairs(rng):
    separator, equals = rng.choice(";,&|"), rng.choice("=:")

    def text(size: int) -> str:
        return separator.join(f"{key}{equals}{rng.randint(-9, 99)}" for key in rng.sample(NAMES, size))

    inputs = [(text(rng.randint(2, 4)),) for _ in range(2)] + [("",), (text(1),)] + [
        (text(rng.randint(1, 6)),) for _ in range(4)]
    return "def parse_pairs(text: str) -> dict[str, int]:", \
        f"`text` holds pairs written as key{equals}value and separated by '{separator}'. Return a dict that maps " \
        "each key to its value as an int; an empty text gives an empty dict.", \
        f"if not text:\n    return {{}}\nreturn {{key: int(value) for key, value in " \
        f"(pair.split({equals!r}) for pair in text.split({separator!r}))}}", inputs


@_family("parsing")
def sum_numbers_in_text(rng):
    def text() -> str:
        size = rng.randint(2, 7)
        return " ".join(rng.choice(WORDS) if rng.random() < 0.6 else str(rng.randint(0, 120)) for _ in range(size))

    inputs = [(text(),), (text(),), ("",), ("no numbers here",), (f"a{rng.randint(1, 9)}b{rng.randint(10, 99)}c",)] + [
        (text(),) for _ in range(3)]
    return "def sum_numbers_in_text(text: str) -> int:", \
        "Return the sum of the whole numbers written in `text`: each unbroken run of digits is one number (there " \
        "are no signs or decimal points).", \
        "return sum(int(part) for part in ''.join(c if c.isdigit() else ' ' for c in text).split())", inputs


@_family("parsing")
def split_numbers(rng):
    separator = rng.choice([",", ";", " ", "|", ", "])
    inputs = [(separator.join(map(str, _numbers(rng, -50, 50))),) for _ in range(2)] + [("",), (str(rng.randint(
        -9, 9)),)] + [(separator.join(map(str, _numbers(rng, -500, 500))),) for _ in range(4)]
    return "def split_numbers(text: str) -> list[int]:", \
        f"`text` holds whole numbers separated by {separator!r}. Return them as a list of ints in the same order; " \
        "an empty text gives an empty list.", \
        f"return [int(part) for part in text.split({separator!r})] if text else []", inputs


@_family("sorting")
def sort_descending(rng):
    return "def sort_descending(numbers: list[int]) -> list[int]:", \
        "Return the numbers of `numbers` sorted from the largest to the smallest.", \
        "return sorted(numbers, reverse=True)", _number_lists(rng)


@_family("sorting")
def sort_by_length(rng):
    inputs = [(rng.sample(WORDS, rng.randint(3, 5)),) for _ in range(2)] + [([],), (["sun"],), (["bb", "a", "cc"],)] + [
        (rng.sample(WORDS, rng.randint(2, 8)),) for _ in range(3)]
    return "def sort_by_length(words: list[str]) -> list[str]:", \
        "Return `words` sorted from the shortest word to the longest; words of the same length keep their order.", \
        "return sorted(words, key=len)", inputs


@_family("matrix")
def transpose(rng):
    def matrix() -> list[list[int]]:
        columns = rng.randint(1, 4)
        return [_numbers(rng, -9, 9, size=columns) for _ in range(rng.randint(1, 4))]

    inputs = [(matrix(),), (matrix(),), ([[1, 2, 3]],), ([[4], [5]],)] + [(matrix(),) for _ in range(4)]
    return "def transpose(matrix: list[list[int]]) -> list[list[int]]:", \
        "Return the transpose of `matrix`, a non-empty list of rows of equal length: row i of the result is " \
        "column i of `matrix`.", "return [list(column) for column in zip(*matrix)]", inputs


@_family("matrix")
def diagonal_sum(rng):
    anti = rng.random() < 0.5
    which = "anti-diagonal (top-right to bottom-left)" if anti else "main diagonal (top-left to bottom-right)"
    column = "len(matrix) - 1 - i" if anti else "i"

    def square(size: int) -> list[list[int]]:
        return [_numbers(rng, -9, 9, size=size) for _ in range(size)]

    inputs = [(square(rng.randint(2, 3)),) for _ in range(2)] + [([],), (square(1),)] + [
        (square(rng.randint(2, 5)),) for _ in range(4)]
    return "def diagonal_sum(matrix: list[list[int]]) -> int:", \
        f"Return the sum of the {which} of the square matrix `matrix` (0 for an empty matrix).", \
        f"return sum(matrix[i][{column}] for i in range(len(matrix)))", inputs


@_family("formatting")
def pad_left(rng):
    width, fill = rng.randint(4, 10), rng.choice("*0.-#")
    inputs = [(rng.choice(WORDS)[:width - 1],) for _ in range(2)] + [("",), ("x" * width,), ("y" * (width + 2),)] + [
        (rng.choice(WORDS),) for _ in range(3)]
    return "def pad_left(text: str) -> str:", \
        f"Return `text` right-aligned in a field of {width} characters by adding '{fill}' on its left; a text of " \
        f"{width} or more characters is returned unchanged.", f"return text.rjust({width}, {fill!r})", inputs


@_family("formatting")
def format_thousands(rng):
    separator = rng.choice([",", ".", " ", "_", "'"])
    inputs = [(rng.randint(1000, 10**7),), (rng.randint(-10**9, -1000),), (0,), (999,), (1000,), (-45,)] + [
        (rng.randint(-10**12, 10**12),) for _ in range(2)]
    return "def format_thousands(n: int) -> str:", \
        f"Return the integer `n` written with {separator!r} between groups of three digits, counted from the " \
        "right; a negative number keeps its '-' in front.", \
        f"return f'{{n:,}}'.replace(',', {separator!r})", inputs

"""The arithmetic domain's calculator tool: the policy writes `<calc>7*12</calc>` and the environment appends `=84`.

The expression is parsed as Python syntax and walked node by node: numbers, + - * / // % ** and parentheses, nothing
else (never `eval`). Names, calls, attributes, huge powers and huge numbers are errors, which the policy reads in
place of a value.
"""

import ast
import operator

from selfplay.tools import Tool

OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
             ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
SIGNS = {ast.UAdd: operator.pos, ast.USub: operator.neg}
MAX_LENGTH = 200  # characters of an expression
MAX_VALUE = 10**15  # the largest magnitude of any value along the way


def calculate(expression: str) -> str:
    """`=value` for an arithmetic expression, or `=error: why`."""
    if len(expression) > MAX_LENGTH:
        return f"=error: longer than {MAX_LENGTH} characters"
    try:
        value = _value(ast.parse(expression.strip(), mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, RecursionError, MemoryError) as error:
        return f"=error: {error}"
    return f"={int(value)}" if value == int(value) else f"={value:.6g}"


def _value(node):
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return _checked(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in SIGNS:
        return SIGNS[type(node.op)](_value(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 64:
            raise ValueError("power too large")
        return _checked(OPERATORS[type(node.op)](left, right))
    raise ValueError(f"not arithmetic: {ast.unparse(node)[:40]}")


def _checked(value):
    if isinstance(value, complex):  # (-8) ** 0.5
        raise ValueError("not a real number")
    if abs(value) > MAX_VALUE:
        raise ValueError("too large")
    return value


CALCULATOR = Tool(open="<calc>", close="</calc>", run=calculate)

"""A small, safe expression language for rollback criteria (``missing > 0``, ``p95_ms > 800``).

Why hand-written: criteria come from a config file that many people edit under pressure, and
they are evaluated against values measured in a live system. Python's `eval` (or any of its
"safe" cousins) would hand the file's author the interpreter; a tokenizer and a recursive-descent
parser of about two hundred lines give exactly the language the matrix needs and nothing more.

The language:

* numbers (``0.5``, ``1e3``), strings in single or double quotes, ``true``, ``false``, ``null``;
* names of result values (``difference_pct``), dotted for nested mappings (``jobs.failed``);
* arithmetic ``+ - * / %`` and unary minus, on numbers only;
* comparisons ``< <= > >= == !=`` (one per operand pair: ``a < b < c`` is refused, it reads
  differently in every language), ``==``/``!=`` also on text, booleans and null;
* ``and``, ``or``, ``not`` (short-circuit), on booleans only;
* functions ``abs(x)``, ``min(a, b, ...)``, ``max(a, b, ...)``.

A whole expression must be a condition (true or false). Every error is an `ExpressionError`
(parse time) or an `EvaluationError` (a value is missing, null, of the wrong type, a division by
zero, a result that is not a finite number), each with a sentence for a human; nothing else
ever escapes, whatever the text or the values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Mapping

__all__ = [
    "EvaluationError",
    "Expression",
    "ExpressionError",
    "FUNCTIONS",
    "MAX_DEPTH",
    "MAX_LENGTH",
    "parse",
]

MAX_LENGTH = 500
"""Longest expression accepted: a criterion is one line a decision maker must be able to read."""
MAX_DEPTH = 40
"""Deepest nesting accepted, far below Python's recursion limit (the parser recurses)."""
MAX_NUMBER_CHARS = 40
"""Longest number literal: keeps int() away from Python's 4300-digit limit and huge arithmetic."""

EXPECT_CONDITION = "a condition such as missing > 0 or p95_ms >= 800"


class ExpressionError(ValueError):
    """The text is not a valid expression; `position` is the 0-based offset of the problem."""

    def __init__(self, message: str, position: int, expected: str = EXPECT_CONDITION) -> None:
        self.message = message
        self.position = position
        self.expected = expected
        super().__init__(str(self))

    @property
    def column(self) -> int:
        """The 1-based column of the problem within the expression."""
        return self.position + 1

    def __str__(self) -> str:
        return f"{self.message} (at column {self.column}); expected {self.expected}"


class EvaluationError(ValueError):
    """A valid expression could not be evaluated on the given values (missing, null, wrong type)."""


# --------------------------------------------------------------------------------------------
# tokens


@dataclass(frozen=True)
class _Token:
    kind: str
    """NUM, STR, NAME, OP, KW or END."""
    text: str
    pos: int
    value: Any = None


_KEYWORDS = {"and", "or", "not", "true", "false", "null"}
_OPERATORS = ("<=", ">=", "==", "!=", "<", ">", "+", "-", "*", "/", "%", "(", ")", ",")
_HINTS = {
    "&&": "'and'",
    "||": "'or'",
    "!": "'not', or != to compare",
    "=": "== to compare",
    "**": "one of + - * / % (there are no powers)",
    "=>": ">=",
    "=<": "<=",
    "<>": "!=",
}
"""Operators of other languages, with what to write instead."""


_HINTS_LONGEST_FIRST = sorted(_HINTS.items(), key=lambda item: -len(item[0]))


def _is_name_start(ch: str) -> bool:
    return ch == "_" or ("a" <= ch <= "z") or ("A" <= ch <= "Z")


def _is_name_char(ch: str) -> bool:
    return _is_name_start(ch) or ("0" <= ch <= "9")


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in " \t\r\n":
            i += 1
            continue
        if ch.isascii() and ch.isdigit() or (ch == "." and i + 1 < n and text[i + 1].isascii() and text[i + 1].isdigit()):
            i = _number(text, i, tokens)
            continue
        if ch in "'\"":
            end = text.find(ch, i + 1)
            if end < 0:
                raise ExpressionError(f"text starting with {ch} is never closed", i, f"a closing {ch}")
            tokens.append(_Token("STR", text[i : end + 1], i, text[i + 1 : end]))
            i = end + 1
            continue
        if _is_name_start(ch):
            start = i
            while i < n and (_is_name_char(text[i]) or (text[i] == "." and i + 1 < n and _is_name_start(text[i + 1]))):
                i += 1
            word = text[start:i]
            if word.lower() in _KEYWORDS:
                tokens.append(_Token("KW", word, start, word.lower()))
            else:
                tokens.append(_Token("NAME", word, start, word))
            continue
        for hint, advice in _HINTS_LONGEST_FIRST:
            if text.startswith(hint, i) and not any(text.startswith(op, i) and len(op) >= len(hint) for op in _OPERATORS):
                raise ExpressionError(f"{hint!r} is not an operator", i, advice)
        for op in _OPERATORS:
            if text.startswith(op, i):
                tokens.append(_Token("OP", op, i))
                i += len(op)
                break
        else:
            raise ExpressionError(f"unexpected character {ch!r}", i, "names, numbers, quotes and operators < <= > >= == != + - * / % ( )")
    tokens.append(_Token("END", "", n))
    return tokens


def _number(text: str, i: int, tokens: list[_Token]) -> int:
    start, n = i, len(text)
    while i < n and text[i].isascii() and text[i].isdigit():
        i += 1
    if i < n and text[i] == ".":
        i += 1
        while i < n and text[i].isascii() and text[i].isdigit():
            i += 1
    if i < n and text[i] in "eE":
        j = i + 1
        if j < n and text[j] in "+-":
            j += 1
        if j < n and text[j].isascii() and text[j].isdigit():
            i = j
            while i < n and text[i].isascii() and text[i].isdigit():
                i += 1
    literal = text[start:i]
    if i < n and _is_name_char(text[i]):
        raise ExpressionError(f"{text[start:i + 1]!r} is not a number", start, "a number such as 0.5 or 1e3")
    if len(literal) > MAX_NUMBER_CHARS:
        raise ExpressionError(f"number {literal[:12]}… is too long", start, f"at most {MAX_NUMBER_CHARS} characters")
    if any(c in literal for c in ".eE"):
        value: float | int = float(literal)
        if not math.isfinite(value):
            raise ExpressionError(f"number {literal} is out of range", start, "a finite number")
    else:
        value = int(literal)
    tokens.append(_Token("NUM", literal, start, value))
    return i


# --------------------------------------------------------------------------------------------
# syntax tree


@dataclass(frozen=True)
class _Node:
    pos: int


@dataclass(frozen=True)
class _Literal(_Node):
    value: Any


@dataclass(frozen=True)
class _Name(_Node):
    name: str


@dataclass(frozen=True)
class _Unary(_Node):
    op: str
    operand: _Node


@dataclass(frozen=True)
class _Binary(_Node):
    op: str
    left: _Node
    right: _Node


@dataclass(frozen=True)
class _Call(_Node):
    function: str
    args: tuple[_Node, ...]


_COMPARE = ("<", "<=", ">", ">=", "==", "!=")
_BOOLEAN_NODES = (_Binary, _Unary)


def _number_arg(args: tuple[Any, ...], name: str) -> None:
    for value in args:
        if not _is_number(value):
            raise EvaluationError(f"{name}() takes numbers, got {_describe(value)}")


def _fn_abs(*args: Any) -> Any:
    if len(args) != 1:
        raise EvaluationError("abs() takes exactly one number")
    _number_arg(args, "abs")
    return abs(args[0])


def _fn_min(*args: Any) -> Any:
    _number_arg(args, "min")
    return min(args)


def _fn_max(*args: Any) -> Any:
    _number_arg(args, "max")
    return max(args)


FUNCTIONS: Mapping[str, tuple[int, int | None, Callable[..., Any]]] = {
    "abs": (1, 1, _fn_abs),
    "min": (1, None, _fn_min),
    "max": (1, None, _fn_max),
}
"""name -> (fewest arguments, most arguments or None, implementation)."""


class _Parser:
    """Recursive descent, one method per precedence level (lowest first)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0

    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def at_op(self, *ops: str) -> bool:
        return self.tok.kind == "OP" and self.tok.text in ops

    def at_kw(self, word: str) -> bool:
        return self.tok.kind == "KW" and self.tok.value == word

    def fail(self, what: str, expected: str) -> ExpressionError:
        tok = self.tok
        found = "the end of the expression" if tok.kind == "END" else repr(tok.text)
        return ExpressionError(f"{what}, found {found}", tok.pos, expected)

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionError(f"nested more than {MAX_DEPTH} levels deep", self.tok.pos, "a simpler expression")

    def parse(self) -> _Node:
        node = self.or_()
        if self.tok.kind != "END":
            raise self.fail("unexpected text after a complete expression", "and, or, or the end of the expression")
        return node

    def or_(self) -> _Node:
        self.nest()
        node = self.and_()
        while self.at_kw("or"):
            tok = self.take()
            node = _Binary(tok.pos, "or", node, self.and_())
        self.depth -= 1
        return node

    def and_(self) -> _Node:
        node = self.not_()
        while self.at_kw("and"):
            tok = self.take()
            node = _Binary(tok.pos, "and", node, self.not_())
        return node

    def not_(self) -> _Node:
        if self.at_kw("not"):
            tok = self.take()
            self.nest()
            operand = self.not_()
            self.depth -= 1
            return _Unary(tok.pos, "not", operand)
        return self.compare()

    def compare(self) -> _Node:
        node = self.sum()
        if self.at_op(*_COMPARE):
            tok = self.take()
            node = _Binary(tok.pos, tok.text, node, self.sum())
            if self.at_op(*_COMPARE):
                raise self.fail("comparisons cannot be chained", "'and' between two comparisons (a < b and b < c)")
        return node

    def sum(self) -> _Node:
        node = self.term()
        while self.at_op("+", "-"):
            tok = self.take()
            node = _Binary(tok.pos, tok.text, node, self.term())
        return node

    def term(self) -> _Node:
        node = self.unary()
        while self.at_op("*", "/", "%"):
            tok = self.take()
            node = _Binary(tok.pos, tok.text, node, self.unary())
        return node

    def unary(self) -> _Node:
        if self.at_op("-", "+"):
            tok = self.take()
            self.nest()
            operand = self.unary()
            self.depth -= 1
            return _Unary(tok.pos, tok.text, operand)
        return self.atom()

    def atom(self) -> _Node:
        tok = self.tok
        if tok.kind == "NUM" or tok.kind == "STR":
            self.take()
            return _Literal(tok.pos, tok.value)
        if tok.kind == "KW" and tok.value in ("true", "false", "null"):
            self.take()
            return _Literal(tok.pos, {"true": True, "false": False, "null": None}[tok.value])
        if tok.kind == "NAME":
            self.take()
            if self.at_op("("):
                return self.call(tok)
            return _Name(tok.pos, tok.value)
        if self.at_op("("):
            self.take()
            node = self.or_()
            if not self.at_op(")"):
                raise self.fail("a '(' is never closed", "')'")
            self.take()
            return node
        raise self.fail("expected a value", "a name, a number, a quoted text, true, false, null or '('")

    def call(self, name: _Token) -> _Node:
        spec = FUNCTIONS.get(name.value)
        if spec is None:
            known = ", ".join(FUNCTIONS)
            raise ExpressionError(f"unknown function {name.value!r}", name.pos, f"one of {known}")
        self.take()  # (
        args: list[_Node] = []
        if not self.at_op(")"):
            while True:
                args.append(self.or_())
                if self.at_op(","):
                    self.take()
                    continue
                break
        if not self.at_op(")"):
            raise self.fail(f"the call of {name.value}() is never closed", "',' or ')'")
        self.take()
        least, most, _ = spec
        if len(args) < least or (most is not None and len(args) > most):
            count = f"exactly {least}" if least == most else f"at least {least}"
            raise ExpressionError(f"{name.value}() takes {count} argument(s), got {len(args)}", name.pos, f"{name.value}(x)")
        return _Call(name.pos, name.value, tuple(args))


def _is_condition(node: _Node) -> bool:
    """True for nodes whose value is a boolean by construction (comparison, and/or/not, literal)."""
    if isinstance(node, _Literal):
        return isinstance(node.value, bool)
    if isinstance(node, _Binary):
        return node.op in _COMPARE or node.op in ("and", "or")
    if isinstance(node, _Unary):
        return node.op == "not"
    return False


# --------------------------------------------------------------------------------------------
# evaluation


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if _is_number(value):
        return f"the number {value}"
    if isinstance(value, str):
        return "text"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return type(value).__name__


def _finite(value: Any, what: str) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise EvaluationError(f"{what} is not a finite number")
    return value


class _Evaluator:
    def __init__(self, env: Mapping[str, Any]) -> None:
        self.env = env

    def value(self, node: _Node) -> Any:
        if isinstance(node, _Literal):
            return node.value
        if isinstance(node, _Name):
            return self.lookup(node.name)
        if isinstance(node, _Unary):
            return self.unary(node)
        if isinstance(node, _Binary):
            return self.binary(node)
        if isinstance(node, _Call):
            _, _, fn = FUNCTIONS[node.function]
            return _finite(fn(*(self.value(a) for a in node.args)), f"{node.function}()")
        raise EvaluationError(f"cannot evaluate {type(node).__name__}")  # pragma: no cover

    def lookup(self, name: str) -> Any:
        current: Any = self.env
        path: list[str] = []
        for part in name.split("."):
            if not isinstance(current, Mapping) or part not in current:
                where = ".".join(path) or "the result"
                if isinstance(current, Mapping):
                    keys = ", ".join(sorted(str(k) for k in current)[:8]) or "nothing"
                    raise EvaluationError(f"{name!r} is not among the values of {where} (it has {keys})")
                raise EvaluationError(f"{name!r}: {where} is {_describe(current)}, not a mapping")
            current = current[part]
            path.append(part)
        if not (current is None or isinstance(current, (bool, int, float, str))):
            raise EvaluationError(f"{name!r} is {_describe(current)}, not a number, text or true/false")
        if isinstance(current, float) and not math.isfinite(current):
            raise EvaluationError(f"{name!r} is not a finite number")
        return current

    def unary(self, node: _Unary) -> Any:
        value = self.value(node.operand)
        if node.op == "not":
            if not isinstance(value, bool):
                raise EvaluationError(f"'not' needs true or false, got {_describe(value)}")
            return not value
        if not _is_number(value):
            raise EvaluationError(f"'{node.op}' needs a number, got {_describe(value)}")
        return -value if node.op == "-" else value

    def binary(self, node: _Binary) -> Any:
        op = node.op
        if op in ("and", "or"):
            left = self.value(node.left)
            if not isinstance(left, bool):
                raise EvaluationError(f"'{op}' needs true or false on its left, got {_describe(left)}")
            if (op == "and" and not left) or (op == "or" and left):
                return left
            right = self.value(node.right)
            if not isinstance(right, bool):
                raise EvaluationError(f"'{op}' needs true or false on its right, got {_describe(right)}")
            return right
        left, right = self.value(node.left), self.value(node.right)
        if op in ("==", "!="):
            if _is_number(left) and _is_number(right):
                equal = left == right
            elif left is None or right is None or type(left) is type(right):
                equal = left == right
            else:
                raise EvaluationError(f"cannot compare {_describe(left)} with {_describe(right)} using {op}")
            return equal if op == "==" else not equal
        if op in _COMPARE:
            if left is None or right is None:
                raise EvaluationError(f"cannot order null with {op} (the value was not measured)")
            if not (_is_number(left) and _is_number(right)):
                raise EvaluationError(f"{op} compares numbers, got {_describe(left)} and {_describe(right)}")
            return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op]
        if not (_is_number(left) and _is_number(right)):
            raise EvaluationError(f"'{op}' needs numbers, got {_describe(left)} and {_describe(right)}")
        if op in ("/", "%") and right == 0:
            raise EvaluationError(f"division by zero in '{op}'")
        try:
            result = {"+": lambda: left + right, "-": lambda: left - right, "*": lambda: left * right,
                      "/": lambda: left / right, "%": lambda: left % right}[op]()
        except OverflowError:
            raise EvaluationError(f"'{op}' overflowed") from None
        return _finite(result, f"the result of '{op}'")


# --------------------------------------------------------------------------------------------
# public API


@dataclass(frozen=True)
class Expression:
    """A parsed, validated condition; evaluate it with `evaluate(values)`."""

    text: str
    _root: _Node

    @property
    def names(self) -> tuple[str, ...]:
        """The value names the expression reads, in order of first use (for "live value" columns)."""
        seen: dict[str, None] = {}
        stack = [self._root]
        order: list[_Node] = []
        while stack:
            node = stack.pop()
            order.append(node)
            if isinstance(node, _Unary):
                stack.append(node.operand)
            elif isinstance(node, _Binary):
                stack.extend((node.right, node.left))
            elif isinstance(node, _Call):
                stack.extend(reversed(node.args))
        for node in order:
            if isinstance(node, _Name):
                seen.setdefault(node.name, None)
        return tuple(seen)

    def evaluate(self, values: Mapping[str, Any]) -> bool:
        """True or False on `values`; raises EvaluationError (and only that) when it cannot say."""
        try:
            result = _Evaluator(values).value(self._root)
        except EvaluationError:
            raise
        except RecursionError:  # pragma: no cover - MAX_DEPTH keeps this far away
            raise EvaluationError("expression too deeply nested") from None
        except (ArithmeticError, TypeError, ValueError) as exc:  # defence in depth: never anything else
            raise EvaluationError(f"cannot evaluate: {exc}") from None
        if not isinstance(result, bool):
            raise EvaluationError(f"the expression gave {_describe(result)}, not true or false")
        return result

    def __str__(self) -> str:
        return self.text


def parse(text: str) -> Expression:
    """Parses a condition; raises ExpressionError (and only that) with position and expectation."""
    if not isinstance(text, str):
        raise ExpressionError(f"an expression must be text, got {type(text).__name__}", 0)
    return _parse_cached(text)


@lru_cache(maxsize=512)
def _parse_cached(text: str) -> Expression:
    if not text.strip():
        raise ExpressionError("the expression is empty", 0)
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"the expression is {len(text)} characters long", MAX_LENGTH, f"at most {MAX_LENGTH} characters")
    try:
        root = _Parser(text).parse()
    except RecursionError:  # pragma: no cover - MAX_DEPTH keeps this far away
        raise ExpressionError("the expression is nested too deeply", 0, "a simpler expression") from None
    if not _is_condition(root):
        raise ExpressionError("the expression gives a value, not true or false", root.pos)
    return Expression(text, root)

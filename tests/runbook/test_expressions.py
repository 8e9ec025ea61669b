"""The rollback-criteria expression language: what it accepts, what it refuses, and that nothing
anyone can type (or any value a check can report) crashes it or runs code."""

from __future__ import annotations

import ast
import builtins
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crmctl.expressions import MAX_DEPTH, MAX_LENGTH, EvaluationError, Expression, ExpressionError, parse

SOURCE = Path(__file__).resolve().parents[2] / "crmctl" / "expressions.py"


@pytest.mark.parametrize(
    ("text", "values", "expected"),
    [
        ("missing > 0", {"missing": 37}, True),
        ("missing > 0", {"missing": 0}, False),
        ("p95_ms > 800", {"p95_ms": 912.5}, True),
        ("failed_jobs >= 10", {"failed_jobs": 10}, True),
        ("difference_pct > 0.5 or status == 'BREACH'", {"difference_pct": 0.1, "status": "BREACH"}, True),
        ("difference_pct > 0.5 and status != \"OK\"", {"difference_pct": 0.6, "status": "OK"}, False),
        ("not (missing > 0)", {"missing": 0}, True),
        ("abs(difference) > 30", {"difference": -34}, True),
        ("max(a, b, c) <= 3 and min(a, b) >= 1", {"a": 1, "b": 2, "c": 3}, True),
        ("(target - source) / source * 100 < -0.1", {"target": 19_966, "source": 20_000}, True),
        ("errors % 2 == 1", {"errors": 7}, True),
        ("-x < 0", {"x": 1}, True),
        ("jobs.failed > 0", {"jobs": {"failed": 2}}, True),
        ("hint == null", {"hint": None}, True),
        ("TRUE and not False", {}, True),
        ("1e3 == 1000", {}, True),
        (".5 < 1", {}, True),
        ("ok == true", {"ok": True}, True),
    ],
)
def test_expressions_evaluate(text: str, values: dict[str, Any], expected: bool) -> None:
    assert parse(text).evaluate(values) is expected


def test_names_are_listed_for_the_live_value_column() -> None:
    assert parse("difference_pct > 0.5 or status == 'BREACH' or difference_pct < -1").names == (
        "difference_pct", "status")
    assert parse("max(a, jobs.failed) > 1").names == ("a", "jobs.failed")


def test_or_and_short_circuit_before_a_missing_value() -> None:
    assert parse("status == 'OK' or nonexistent > 1").evaluate({"status": "OK"}) is True
    with pytest.raises(EvaluationError, match="'nonexistent' is not among the values"):
        parse("status == 'OK' and nonexistent > 1").evaluate({"status": "OK"})


@pytest.mark.parametrize(
    ("text", "message", "column", "expected"),
    [
        ("", "the expression is empty", 1, "a condition such as missing > 0"),
        ("missing", "the expression gives a value, not true or false", 1, "a condition"),
        ("missing + 1", "the expression gives a value", 9, "a condition"),
        ("missing = 0", "'=' is not an operator", 9, "== to compare"),
        ("missing => 0", "'=>' is not an operator", 9, ">="),
        ("a && b", "'&&' is not an operator", 3, "'and'"),
        ("!ok", "'!' is not an operator", 1, "'not', or != to compare"),
        ("a ** 2 > 1", "'**' is not an operator", 3, "there are no powers"),
        ("0 < a < 5", "comparisons cannot be chained, found '<'", 7, "'and' between two comparisons"),
        ("(missing > 0", "a '(' is never closed, found the end of the expression", 13, "')'"),
        ("missing > ", "expected a value, found the end of the expression", 11, "a name, a number"),
        ("missing > 0 0", "unexpected text after a complete expression, found '0'", 13, "and, or"),
        ("status == 'BREACH", "text starting with ' is never closed", 11, "a closing '"),
        ("system('rm') > 0", "unknown function 'system'", 1, "one of abs, min, max"),
        ("abs(1, 2) > 0", "abs() takes exactly 1 argument(s), got 2", 1, "abs(x)"),
        ("12abc > 1", "'12a' is not a number", 1, "a number"),
        ("1e999 > 1", "number 1e999 is out of range", 1, "a finite number"),
        ("a > " + "9" * 60, "is too long", 5, "at most 40 characters"),
        ("a > $x", "unexpected character '$'", 5, "names, numbers, quotes"),
        ("a\x00 > 1", "unexpected character '\\x00'", 2, "names, numbers"),
        ("a > 1;", "unexpected character ';'", 6, "names"),
        ("x.__class__ > 1 or y.", "unexpected character '.'", 21, "names"),
    ],
)
def test_parse_errors_say_what_where_and_what_was_expected(text: str, message: str, column: int, expected: str) -> None:
    with pytest.raises(ExpressionError) as info:
        parse(text)
    error = info.value
    assert message in error.message, error.message
    assert error.column == column, (error.column, str(error))
    assert expected in error.expected, error.expected
    assert str(error) == f"{error.message} (at column {column}); expected {error.expected}"


@pytest.mark.parametrize(
    ("text", "values", "message"),
    [
        ("missing > 0", {}, "'missing' is not among the values of the result (it has nothing)"),
        ("missing > 0", {"missing_pct": 1}, "(it has missing_pct)"),
        ("missing > 0", {"missing": None}, "cannot order null with > (the value was not measured)"),
        ("missing > 0", {"missing": "37"}, "> compares numbers, got text and the number 0"),
        ("missing > 0", {"missing": [1, 2]}, "'missing' is a list, not a number"),
        ("missing > 0", {"missing": True}, "> compares numbers, got true and the number 0"),
        ("missing > 0", {"missing": math.inf}, "'missing' is not a finite number"),
        ("a / b > 1", {"a": 1, "b": 0}, "division by zero"),
        ("a * a * a > 1", {"a": 1e200}, "is not a finite number"),
        ("status == 1", {"status": "OK"}, "cannot compare text with the number 1 using =="),
        ("a and b", {"a": 1, "b": True}, "'and' needs true or false on its left, got the number 1"),
        ("not a", {"a": "x"}, "'not' needs true or false, got text"),
        ("x.y > 1", {"x": 3}, "'x.y': x is the number 3, not a mapping"),
        ("min(a, 'b') > 1", {"a": 1}, "min() takes numbers, got text"),
        ("-s > 1", {"s": "x"}, "'-' needs a number, got text"),
    ],
)
def test_evaluation_errors_are_clear(text: str, values: dict[str, Any], message: str) -> None:
    with pytest.raises(EvaluationError) as info:
        parse(text).evaluate(values)
    assert message in str(info.value), str(info.value)


def test_limits_on_length_and_nesting() -> None:
    with pytest.raises(ExpressionError, match=f"at most {MAX_LENGTH} characters"):
        parse("a > 1 or " * 60 + "a > 1")
    with pytest.raises(ExpressionError, match=f"nested more than {MAX_DEPTH} levels deep"):
        parse("(" * 200 + "a > 1" + ")" * 200)
    with pytest.raises(ExpressionError, match="nested more than"):
        parse("not " * 120 + "a")
    with pytest.raises(ExpressionError, match="nested more than"):
        parse("a > " + "-" * 120 + "1")
    assert parse("(" * 10 + "a > 1" + ")" * 10).evaluate({"a": 2})


def test_the_evaluator_never_calls_eval_exec_compile_or_getattr() -> None:
    """No code path can hand text to Python: the module does not even mention those builtins."""
    tree = ast.parse(SOURCE.read_text())
    called = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert not called & {"eval", "exec", "compile", "getattr", "__import__", "open", "setattr", "vars", "globals"}
    imported = {a.name for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom)) for a in node.names}
    assert "literal_eval" not in imported and "ast" not in imported


# --------------------------------------------------------------------------------------------
# property tests: odd and hostile inputs


@contextmanager
def no_code_execution() -> Iterator[None]:
    """Any eval or exec while the evaluator runs fails the test loudly (only around our calls:
    Hypothesis itself uses eval to describe strategies; compile stays for pytest's reports, and
    the AST test above proves the module never calls it)."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the expression evaluator tried to execute code")

    with patch.object(builtins, "eval", forbidden), patch.object(builtins, "exec", forbidden):
        yield


ALPHABET = st.sampled_from(list("abcxyz_09. ()<>=!+-*/%,'\"&|\\$;:[]{}@#\n\t\x00é∞٣")
                           + ["and", "or", "not", "true", "null", "__import__", "os", "system", "abs(", "min(",
                              "eval", "lambda", "1e999", "9" * 45, "__class__", "==", ">=", " missing "])
HOSTILE = st.lists(ALPHABET, max_size=40).map("".join)


@settings(max_examples=400, deadline=None)
@given(text=st.one_of(st.text(max_size=80), HOSTILE))
def test_any_text_parses_or_raises_expression_error_only(text: str) -> None:
    try:
        with no_code_execution():
            expression = parse(text)
    except ExpressionError as exc:
        assert exc.message and exc.expected and 0 <= exc.position <= len(text) + 1
        assert str(exc).startswith(exc.message)
        return
    assert isinstance(expression, Expression)
    try:
        with no_code_execution():
            result = expression.evaluate({})
    except EvaluationError as exc:
        assert str(exc)
    else:
        assert isinstance(result, bool)


NAMES = st.sampled_from(["a", "b", "missing", "p95_ms", "status", "jobs.failed", "x.y.z"])
VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-10**30, max_value=10**30),
              st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["failed", "y", "z"]), inner,
                                                                         max_size=3)),
    max_leaves=6,
)
ENVS = st.dictionaries(st.sampled_from(["a", "b", "missing", "p95_ms", "status", "jobs", "x"]), VALUES, max_size=6)


def _terms(depth: int) -> st.SearchStrategy[str]:
    atom = st.one_of(NAMES, st.integers(-1000, 1000).map(str), st.floats(0, 1e6).map(lambda f: f"{f:.3g}"),
                     st.sampled_from(["'OK'", '"BREACH"', "true", "null", "1e308"]))
    if depth == 0:
        return atom
    inner = _terms(depth - 1)
    return st.one_of(
        atom,
        st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "%"]), inner).map(" ".join),
        inner.map(lambda t: f"-{t}"),
        st.tuples(st.sampled_from(["abs", "min", "max"]), inner).map(lambda p: f"{p[0]}({p[1]})"),
        inner.map(lambda t: f"({t})"),
    )


CONDITIONS = st.recursive(
    st.tuples(_terms(2), st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), _terms(2)).map(" ".join),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(" ".join),
        inner.map(lambda c: f"not ({c})"),
    ),
    max_leaves=4,
)


@settings(max_examples=200, deadline=None)
@given(text=CONDITIONS, env=ENVS)
def test_well_formed_conditions_on_any_values_give_a_bool_or_evaluation_error(text: str, env: dict[str, Any]) -> None:
    try:
        with no_code_execution():
            expression = parse(text)
    except ExpressionError:
        return  # too long or too deep: refused with a message, which is fine
    try:
        with no_code_execution():
            result = expression.evaluate(env)
    except EvaluationError as exc:
        assert str(exc)
    else:
        assert isinstance(result, bool)

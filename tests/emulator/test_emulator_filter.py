"""The $filter tokenizer and parser: grammar, case-insensitive semantics, documented errors."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from crmctl.emulator.errors import ApiError
from crmctl.emulator.odata_filter import compile_filter, tokenize
from tests.emulator.emu_helpers import ACCOUNT, World


def names(world: World, text: str) -> set[str | None]:
    expr = compile_filter(text, ACCOUNT)
    conn = sqlite3.connect(world.path)
    try:
        rows = conn.execute(f"SELECT accountnumber FROM e_account WHERE {expr.sql}", expr.params)
        return {r[0] for r in rows}
    finally:
        conn.close()


def numbers(world: World, pred: object) -> set[str]:
    return {a["accountnumber"] for a in world.accounts if pred(a)}  # type: ignore[operator]


def test_doubled_quote_escapes_and_matches(world: World) -> None:
    assert names(world, "name eq 'O''Bryan Ltd'") == {"AC-0000"}


def test_string_comparison_is_case_insensitive_like_dataverse(world: World) -> None:
    assert names(world, "name eq 'CONTOSO'") == {"AC-0001"}
    assert names(world, "startswith(name,'contoso')") == {"AC-0001", "AC-0002"}
    assert names(world, "contains(name,'PHARMA')") == {"AC-0002"}
    assert names(world, "endswith(name,'ltd')") == {"AC-0000"}


def test_like_wildcards_in_function_arguments_are_literal(world: World) -> None:
    assert names(world, "contains(name,'%')") == {"AC-0003"}
    assert names(world, "contains(name,'h_C')") == {"AC-0003"}
    assert names(world, "contains(name,'_')") == {"AC-0003"}


def test_null_comparisons(world: World) -> None:
    assert names(world, "_primarycontactid_value eq null") == numbers(
        world, lambda a: a["primarycontactid"] is None
    )
    assert names(world, "revenue ne null") == numbers(world, lambda a: a["revenue"] is not None)


def test_precedence_not_and_or_parentheses(world: World) -> None:
    got = names(world, "statuscode eq 2 or numberofemployees lt 9 and donotemail eq true")
    want = numbers(
        world, lambda a: a["statuscode"] == 2 or (a["numberofemployees"] < 9 and a["donotemail"])
    )
    assert got == want
    got = names(world, "(statuscode eq 2 or numberofemployees lt 9) and not (donotemail eq true)")
    want = numbers(
        world,
        lambda a: (a["statuscode"] == 2 or a["numberofemployees"] < 9) and not a["donotemail"],
    )
    assert got == want


def test_numbers_booleans_datetimes_guids(world: World) -> None:
    assert names(world, "revenue gt 50000.5") == numbers(
        world, lambda a: a["revenue"] is not None and a["revenue"] > 50000.5
    )
    assert names(world, "numberofemployees ge 150 and numberofemployees le 153") == {
        "AC-0050",
        "AC-0051",
    }
    assert names(world, "donotemail") == numbers(world, lambda a: a["donotemail"])
    assert names(world, "createdon ge 2024-06-01T00:00:00Z and createdon lt 2024-06-03") == {
        "AC-0031",
        "AC-0032",
    }
    target = world.accounts[7]["accountid"]
    assert names(world, f"accountid eq {target.upper()}") == {"AC-0007"}
    assert names(world, f"accountid eq '{target}'") == {"AC-0007"}
    assert names(world, "statuscode in (2)") == numbers(world, lambda a: a["statuscode"] == 2)


def test_values_are_bound_never_interpolated(world: World) -> None:
    expr = compile_filter("name eq 'x'' or 1 eq 1 --'", ACCOUNT)
    assert "x' or 1 eq 1 --" in expr.params
    assert "1 eq 1" not in expr.sql
    assert names(world, "name eq 'x'' or 1 eq 1 --'") == set()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # The exact documented message (dataverse.md §6, filter-rows.md).
        (
            "lastname eq 'O'Bryan'",
            "There is an unterminated literal at position 21 in 'lastname eq 'O'Bryan''.",
        ),
        ("name eq", "Expression expected at position 7 in 'name eq'."),
        ("name eq 'a' 'b'", "Syntax error at position 12 in 'name eq 'a' 'b''."),
        (
            "name eq 'a' #",
            "Syntax error: character '#' is not valid at position 12 in 'name eq 'a' #'.",
        ),
        ("(name eq 'a'", "')' expected at position 12 in '(name eq 'a''."),
        ("name eq 'a' and", "Expression expected at position 15 in 'name eq 'a' and'."),
    ],
)
def test_syntax_errors_carry_positions(text: str, message: str) -> None:
    entity = ACCOUNT
    if text.startswith("lastname"):
        from tests.emulator.emu_helpers import CONTACT as entity  # noqa: N811
    with pytest.raises(ApiError) as info:
        compile_filter(text, entity)
    assert info.value.status == 400
    assert info.value.message == message


def test_unknown_property_is_case_sensitive_and_documented() -> None:
    with pytest.raises(ApiError) as info:
        compile_filter("Name eq 'x'", ACCOUNT)
    assert info.value.body() == {
        "error": {
            "code": "0x0",
            "message": "Could not find a property named 'Name' on type 'Microsoft.Dynamics.CRM.account'.",
        }
    }


def test_incompatible_types_are_refused() -> None:
    with pytest.raises(ApiError, match="incompatible types.*'Edm.Int32' and 'Edm.String'.*'Equal'"):
        compile_filter("statuscode eq '1'", ACCOUNT)
    with pytest.raises(ApiError, match="'Edm.DateTimeOffset' and 'Edm.String'"):
        compile_filter("createdon ge '2024-01-01'", ACCOUNT)


def test_tokenizer_handles_every_literal_kind() -> None:
    kinds = [
        t.kind
        for t in tokenize(
            "a eq 'x''y' or b gt -1.5e3 or c eq 2024-01-01T00:00:00+02:00 "
            "or d eq 6f9619ff-8b86-d011-b42d-00c04fc964ff or e eq 2024-01-01"
        )
    ]
    assert kinds.count("string") == 1 and kinds.count("number") == 1
    assert kinds.count("datetime") == 2 and kinds.count("guid") == 1
    assert tokenize("c eq 2024-01-01T00:00:00+02:00")[2].value == "2023-12-31T22:00:00Z"


def test_empty_filter_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ApiError, match="Expression expected at position 0"):
        compile_filter("  ", ACCOUNT)

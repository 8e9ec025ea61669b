"""OData `$filter` tokenizer and recursive-descent parser compiled to a parameterised SQL WHERE."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Union

from crmctl.emulator.errors import ApiError, syntax, unknown_property
from crmctl.emulator.storage import Attribute, EntityDef, normalise_datetime, quote

EDM_TYPES = {
    "guid": "Edm.Guid",
    "lookup": "Edm.Guid",
    "string": "Edm.String",
    "int": "Edm.Int32",
    "decimal": "Edm.Decimal",
    "datetime": "Edm.DateTimeOffset",
    "bool": "Edm.Boolean",
}

_OPERATORS = {
    "eq": ("=", "Equal"),
    "ne": ("<>", "NotEqual"),
    "gt": (">", "GreaterThan"),
    "ge": (">=", "GreaterThanOrEqual"),
    "lt": ("<", "LessThan"),
    "le": ("<=", "LessThanOrEqual"),
}
_FUNCTIONS = {"contains", "startswith", "endswith"}
_KEYWORDS = {"and", "or", "not", "null", "true", "false", "in", *_OPERATORS}

_GUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(?![\w-])"
)
_DATETIME_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})(?![\w:.])"
)
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}(?![\w:.-])")
_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?![\w.])")
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


@dataclass(frozen=True)
class Token:
    """One lexical token; `pos` is its 0-based offset, as OData reports positions."""

    kind: str  # ident string number guid datetime symbol end
    text: str
    pos: int
    value: Any = None


def tokenize(text: str) -> list[Token]:
    """Splits a filter into tokens; raises the OData lexer's errors with their positions."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch == "'":
            j = i + 1
            parts: list[str] = []
            while True:
                k = text.find("'", j)
                if k < 0:
                    raise syntax(f"There is an unterminated literal at position {n} in '{text}'.")
                parts.append(text[j:k])
                if k + 1 < n and text[k + 1] == "'":
                    parts.append("'")
                    j = k + 2
                    continue
                j = k + 1
                break
            tokens.append(Token("string", text[i:j], i, "".join(parts)))
            i = j
            continue
        if ch in "(),":
            tokens.append(Token("symbol", ch, i))
            i += 1
            continue
        m = _GUID_RE.match(text, i)
        if m:
            tokens.append(Token("guid", m.group(), i, m.group().lower()))
            i = m.end()
            continue
        m = _DATETIME_RE.match(text, i) or _DATE_RE.match(text, i)
        if m:
            try:
                value = normalise_datetime(m.group())
            except ValueError:
                raise syntax(
                    f"Unrecognized 'Edm.DateTimeOffset' literal '{m.group()}' at '{i}' in '{text}'."
                ) from None
            tokens.append(Token("datetime", m.group(), i, value))
            i = m.end()
            continue
        m = _NUMBER_RE.match(text, i)
        if m:
            raw = m.group()
            num: int | float = float(raw) if any(c in raw for c in ".eE") else int(raw)
            tokens.append(Token("number", raw, i, num))
            i = m.end()
            continue
        m = _IDENT_RE.match(text, i)
        if m:
            tokens.append(Token("ident", m.group(), i))
            i = m.end()
            continue
        raise syntax(f"Syntax error: character '{ch}' is not valid at position {i} in '{text}'.")
    tokens.append(Token("end", "", n))
    return tokens


@dataclass(frozen=True)
class Prop:
    attr: Attribute
    pos: int


@dataclass(frozen=True)
class Literal:
    kind: str  # string number guid datetime bool null
    value: Any
    pos: int


Operand = Union[Prop, Literal]


@dataclass(frozen=True)
class SqlExpr:
    """A compiled predicate: SQL text with `?` placeholders and the values that bind them."""

    sql: str
    params: tuple[Any, ...] = ()

    def and_(self, other: SqlExpr | None) -> SqlExpr:
        if other is None:
            return self
        return SqlExpr(f"({self.sql}) AND ({other.sql})", self.params + other.params)


TRUE = SqlExpr("1")


def _literal_kind_ok(attr_type: str, lit: Literal) -> bool:
    if lit.kind == "null":
        return True
    if attr_type == "string":
        return lit.kind == "string"
    if attr_type in ("guid", "lookup"):
        return lit.kind in ("guid", "string")
    if attr_type in ("int", "decimal"):
        return lit.kind == "number"
    if attr_type == "bool":
        return lit.kind == "bool"
    if attr_type == "datetime":
        return lit.kind == "datetime"
    return False


_LITERAL_EDM = {
    "string": "Edm.String",
    "number": "Edm.Int32",
    "guid": "Edm.Guid",
    "datetime": "Edm.DateTimeOffset",
    "bool": "Edm.Boolean",
    "null": "",
}


def _edm_of(operand: Operand) -> str:
    if isinstance(operand, Prop):
        return EDM_TYPES[operand.attr.type]
    if operand.kind == "number" and isinstance(operand.value, float):
        return "Edm.Decimal"
    return _LITERAL_EDM[operand.kind]


def _bind(attr_type: str | None, lit: Literal) -> Any:
    """Converts a literal to the value stored in SQLite for a column of `attr_type`."""
    if lit.kind == "bool":
        return 1 if lit.value else 0
    if lit.kind == "string" and attr_type in ("guid", "lookup"):
        return lit.value.strip("{}").lower()
    return lit.value


class _Parser:
    """Recursive descent: or < and < not < comparison / function / parenthesised group."""

    def __init__(self, text: str, entity: EntityDef, type_name: str) -> None:
        self.text = text
        self.entity = entity
        self.type_name = type_name
        self.tokens = tokenize(text)
        self.i = 0

    # --- token helpers -------------------------------------------------------------------
    def peek(self) -> Token:
        return self.tokens[self.i]

    def next(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def is_word(self, word: str) -> bool:
        tok = self.peek()
        return tok.kind == "ident" and tok.text == word

    def is_symbol(self, sym: str) -> bool:
        tok = self.peek()
        return tok.kind == "symbol" and tok.text == sym

    def expect_symbol(self, sym: str) -> Token:
        tok = self.peek()
        if tok.kind == "symbol" and tok.text == sym:
            return self.next()
        if tok.kind == "end":
            raise syntax(f"'{sym}' expected at position {tok.pos} in '{self.text}'.")
        raise self.error(tok)

    def error(self, tok: Token) -> ApiError:
        if tok.kind == "end":
            return syntax(f"Expression expected at position {tok.pos} in '{self.text}'.")
        return syntax(f"Syntax error at position {tok.pos} in '{self.text}'.")

    # --- grammar -------------------------------------------------------------------------
    def parse(self) -> SqlExpr:
        expr = self.or_expr()
        tok = self.peek()
        if tok.kind != "end":
            raise syntax(f"Syntax error at position {tok.pos} in '{self.text}'.")
        return expr

    def or_expr(self) -> SqlExpr:
        left = self.and_expr()
        while self.is_word("or"):
            self.next()
            right = self.and_expr()
            left = SqlExpr(f"({left.sql}) OR ({right.sql})", left.params + right.params)
        return left

    def and_expr(self) -> SqlExpr:
        left = self.unary()
        while self.is_word("and"):
            self.next()
            right = self.unary()
            left = SqlExpr(f"({left.sql}) AND ({right.sql})", left.params + right.params)
        return left

    def unary(self) -> SqlExpr:
        if self.is_word("not"):
            self.next()
            inner = self.unary()
            return SqlExpr(f"NOT ({inner.sql})", inner.params)
        return self.predicate()

    def predicate(self) -> SqlExpr:
        tok = self.peek()
        if tok.kind == "symbol" and tok.text == "(":
            self.next()
            inner = self.or_expr()
            self.expect_symbol(")")
            return inner
        if tok.kind == "ident" and tok.text in _FUNCTIONS and self._followed_by_paren():
            return self.function()
        if tok.kind == "ident" and "." in tok.text and self._followed_by_paren():
            raise syntax(
                f"The function '{tok.text}' at position {tok.pos} is not supported by the "
                f"crmctl emulator in '{self.text}'."
            )
        left = self.operand()
        op_tok = self.peek()
        if op_tok.kind == "ident" and op_tok.text in _OPERATORS:
            self.next()
            right = self.operand()
            return self.comparison(left, op_tok.text, right)
        if op_tok.kind == "ident" and op_tok.text == "in":
            self.next()
            return self.in_list(left)
        ends_predicate = (
            op_tok.kind == "end"
            or (op_tok.kind == "ident" and op_tok.text in ("and", "or"))
            or (op_tok.kind == "symbol" and op_tok.text == ")")
        )
        if isinstance(left, Prop) and left.attr.type == "bool" and ends_predicate:
            # A bare boolean property is a predicate in OData: `$filter=donotemail`.
            return SqlExpr(f"{quote(left.attr.column)} = 1")
        raise self.error(op_tok)

    def _followed_by_paren(self) -> bool:
        nxt = self.tokens[self.i + 1]
        return nxt.kind == "symbol" and nxt.text == "("

    def operand(self) -> Operand:
        tok = self.next()
        if tok.kind == "ident":
            if tok.text == "null":
                return Literal("null", None, tok.pos)
            if tok.text in ("true", "false"):
                return Literal("bool", tok.text == "true", tok.pos)
            if tok.text in _KEYWORDS:
                raise self.error(tok)
            attr = self.entity.attribute(tok.text)
            if attr is None:
                raise unknown_property(tok.text, self.type_name)
            return Prop(attr, tok.pos)
        if tok.kind in ("string", "number", "guid", "datetime"):
            return Literal(tok.kind, tok.value, tok.pos)
        raise self.error(tok)

    def comparison(self, left: Operand, op: str, right: Operand) -> SqlExpr:
        sql_op, kind_name = _OPERATORS[op]
        for a, b in ((left, right), (right, left)):
            if isinstance(a, Prop) and isinstance(b, Literal) and b.kind == "null":
                col = quote(a.attr.column)
                if op == "eq":
                    return SqlExpr(f"{col} IS NULL")
                if op == "ne":
                    return SqlExpr(f"{col} IS NOT NULL")
                return SqlExpr("0")
        self._check_types(left, right, kind_name)
        attr_type = next((o.attr.type for o in (left, right) if isinstance(o, Prop)), None)
        parts: list[str] = []
        params: list[Any] = []
        for side in (left, right):
            if isinstance(side, Prop):
                parts.append(quote(side.attr.column))
            else:
                parts.append("?")
                params.append(_bind(attr_type, side))
        return SqlExpr(f"{parts[0]} {sql_op} {parts[1]}", tuple(params))

    def _check_types(self, left: Operand, right: Operand, kind_name: str) -> None:
        ok = True
        if isinstance(left, Prop) and isinstance(right, Literal):
            ok = _literal_kind_ok(left.attr.type, right)
        elif isinstance(right, Prop) and isinstance(left, Literal):
            ok = _literal_kind_ok(right.attr.type, left)
        else:
            numeric = {"Edm.Int32", "Edm.Decimal"}
            le, re_ = _edm_of(left), _edm_of(right)
            ok = le == re_ or (le in numeric and re_ in numeric) or "" in (le, re_)
        if not ok:
            raise ApiError(
                400,
                "0x80060888",
                "A binary operator with incompatible types was detected. Found operand types "
                f"'{_edm_of(left)}' and '{_edm_of(right)}' for operator kind '{kind_name}'.",
            )

    def in_list(self, left: Operand) -> SqlExpr:
        if not isinstance(left, Prop):
            raise self.error(self.tokens[self.i - 1])
        self.expect_symbol("(")
        values: list[Any] = []
        while True:
            tok = self.peek()
            lit = self.operand()
            if not isinstance(lit, Literal) or lit.kind == "null":
                raise self.error(tok)
            self._check_types(left, lit, "In")
            values.append(_bind(left.attr.type, lit))
            if self.is_symbol(","):
                self.next()
                continue
            self.expect_symbol(")")
            break
        marks = ", ".join("?" * len(values))
        return SqlExpr(f"{quote(left.attr.column)} IN ({marks})", tuple(values))

    def function(self) -> SqlExpr:
        name_tok = self.next()
        self.expect_symbol("(")
        prop = self.operand()
        self.expect_symbol(",")
        arg = self.operand()
        self.expect_symbol(")")
        if not isinstance(prop, Prop) or prop.attr.type != "string":
            raise syntax(
                f"No function signature for the function with name '{name_tok.text}' matches "
                f"the specified arguments at position {name_tok.pos} in '{self.text}'."
            )
        if not isinstance(arg, Literal) or arg.kind != "string":
            raise syntax(
                f"No function signature for the function with name '{name_tok.text}' matches "
                f"the specified arguments at position {name_tok.pos} in '{self.text}'."
            )
        escaped = arg.value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = {
            "contains": f"%{escaped}%",
            "startswith": f"{escaped}%",
            "endswith": f"%{escaped}",
        }[name_tok.text]
        return SqlExpr(f"{quote(prop.attr.column)} LIKE ? ESCAPE '\\'", (pattern,))


def compile_filter(text: str, entity: EntityDef, *, type_name: str | None = None) -> SqlExpr:
    """Compiles an OData `$filter` for `entity` into SQL; values are always bound parameters.

    Raises `ApiError` (400) with OData's position-bearing wording on malformed input and the
    documented "Could not find a property" error for unknown (case-sensitive) properties.
    """
    if not text.strip():
        raise syntax(f"Expression expected at position 0 in '{text}'.")
    type_name = type_name or f"Microsoft.Dynamics.CRM.{entity.logical_name}"
    return _Parser(text, entity, type_name).parse()

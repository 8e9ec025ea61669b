"""Dataverse-shaped API errors: status, hex code and message, exactly as the Web API sends them."""

from __future__ import annotations

from typing import Any, Mapping

# Codes seen in documented responses (dataverse.md §6); the emulator reuses them so clients
# can be tested against the shapes they will really meet.
CODE_NONE = ""
CODE_PROPERTY = "0x0"
CODE_SYNTAX = "0x80060888"
CODE_SEGMENT = "0x8006088a"
CODE_NOT_FOUND = "0x80040217"
CODE_INVALID_ARGUMENT = "0x80040203"
CODE_FETCH_ATTRIBUTE = "0x80041103"
CODE_AGGREGATE_LIMIT = "0x8004e023"
CODE_REQUESTS = "0x80072322"
CODE_EXECUTION = "0x80072321"
CODE_CONCURRENCY = "0x80072326"

AGGREGATE_LIMIT_MESSAGE = "AggregateQueryRecordLimit exceeded. Cannot perform this operation."


class ApiError(Exception):
    """An error the emulator answers with `{"error": {"code": ..., "message": ...}}`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers: dict[str, str] = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The JSON body Dataverse sends for this error."""
        return {"error": {"code": self.code, "message": self.message}}


def unknown_property(name: str, type_name: str) -> ApiError:
    """The documented 400 for a property (in $select, $filter, $orderby) that does not exist."""
    return ApiError(
        400,
        CODE_PROPERTY,
        f"Could not find a property named '{name}' on type '{type_name}'.",
    )


def unknown_segment(segment: str) -> ApiError:
    """The documented 404 for an entity set or function name that does not exist."""
    return ApiError(404, CODE_SEGMENT, f"Resource not found for the segment '{segment}'.")


def no_resource(url: str) -> ApiError:
    """The documented 404 for a wrong HTTP method on a function (e.g. POST WhoAmI)."""
    return ApiError(
        404, CODE_NONE, f"No HTTP resource was found that matches the request URI '{url}'."
    )


def aggregate_limit() -> ApiError:
    """The 50,000-record aggregate limit (0x8004E023), as a Web API 400."""
    return ApiError(400, CODE_AGGREGATE_LIMIT, AGGREGATE_LIMIT_MESSAGE)


def syntax(message: str) -> ApiError:
    """A 400 for a malformed query option."""
    return ApiError(400, CODE_SYNTAX, message)

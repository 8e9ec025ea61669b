"""What the config loader reports: one `Problem` per mistake, all of them in one `ConfigError`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One mistake in a config file, located precisely enough for an editor to jump to it.

    Renders as ``FILE:LINE:COLUMN: what is wrong; what was expected`` (the compiler format
    editors and terminals already understand). Line and column are 1-based.
    """

    file: str
    """The config path as the caller gave it (not resolved, so it reads like what was typed)."""
    line: int
    column: int
    message: str
    """What is wrong, starting with the dotted path of the offending key (``target.limits.timeout``)."""
    expected: str = ""
    """What would have been accepted instead; empty when the message says it all."""

    def __str__(self) -> str:
        text = f"{self.file}:{self.line}:{self.column}: {self.message}"
        return f"{text}; {self.expected}" if self.expected else text


class ConfigError(Exception):
    """Raised by `load_config` with every problem found, never just the first.

    A cutover config is edited under time pressure; fixing one mistake per run would turn a
    one-minute fix into ten, so the loader keeps going and reports them all, in file order.
    """

    def __init__(self, problems: list[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)

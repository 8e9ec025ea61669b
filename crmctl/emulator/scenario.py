"""Rehearsal fault scenarios: YAML validated into typed faults, applied deterministically."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}

FAULT_KINDS = (
    "latency",
    "error",
    "reset",
    "malformed",
    "timeout",
    "throttle",
    "outage",
    "token_expiry",
    "drift",
)
THROTTLE_LIMITS = ("requests", "execution", "concurrency")


class ScenarioError(ValueError):
    """A scenario file that cannot be used; every problem is listed as `file:line: what`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Window:
    """When a fault is active, in seconds since the scenario started (end exclusive)."""

    start_s: float = 0.0
    end_s: float | None = None

    def active(self, elapsed_s: float) -> bool:
        return elapsed_s >= self.start_s and (self.end_s is None or elapsed_s < self.end_s)


@dataclass(frozen=True)
class Fault:
    """One fault rule. Which fields matter depends on `kind`; the loader validates them.

    Request faults fire for requests whose method+path+query matches `path` (a regex searched,
    not anchored), inside `window`, on every `every`-th match and/or with probability `rate`.
    """

    kind: str
    index: int
    window: Window = Window()
    path: re.Pattern[str] | None = None
    rate: float = 1.0
    every: int | None = None
    ms: float = 0.0
    jitter_ms: float = 0.0
    status: int = 503
    code: str = ""
    message: str = ""
    hang_s: float = 300.0
    retry_after_s: int = 5
    limit: str = "requests"
    at_s: float | None = None
    lifetime_s: float | None = None
    entity: str = ""
    interval_s: float = 60.0
    delete: int = 0
    insert: int = 0
    modify: int = 0
    values: Mapping[str, Any] = field(default_factory=dict)
    line: int = 0


@dataclass(frozen=True)
class Scenario:
    """A named set of faults with the seed that makes their random choices repeatable."""

    name: str
    description: str = ""
    seed: int = 0
    faults: tuple[Fault, ...] = ()
    source: str = "<scenario>"

    def of_kind(self, *kinds: str) -> list[Fault]:
        return [f for f in self.faults if f.kind in kinds]


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string like "500ms", "30s", "5m", "1h"."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 500ms, 5m")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("must not be negative")
        return float(value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2)]
    raise ValueError(f"expected a duration such as 30s, 500ms, 5m; got {value!r}")


class _Map(dict):  # type: ignore[type-arg]
    """A YAML mapping that remembers the line of itself and of each key, for error messages."""

    line: int = 0
    key_lines: dict[str, int]


class _Loader(yaml.SafeLoader):
    pass


def _construct_map(loader: yaml.SafeLoader, node: yaml.MappingNode) -> _Map:
    loader.flatten_mapping(node)
    out = _Map()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[str(key)] = key_node.start_mark.line + 1
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)

_COMMON = {"kind", "start", "end", "path", "rate", "every"}
_ALLOWED = {
    "latency": _COMMON | {"ms", "jitter_ms"},
    "error": _COMMON | {"status", "code", "message"},
    "reset": _COMMON,
    "malformed": _COMMON,
    "timeout": _COMMON | {"hang"},
    "throttle": _COMMON | {"retry_after", "limit"},
    "outage": {"kind", "start", "end", "status", "path"},
    "token_expiry": {"kind", "at", "lifetime"},
    "drift": {"kind", "start", "end", "entity", "every", "delete", "insert", "modify", "values"},
}


def parse_scenario(data: Any, source: str = "<scenario>") -> Scenario:
    """Validates a loaded YAML document; raises ScenarioError listing every problem found."""
    problems: list[str] = []

    def where(obj: Any, key: str | None = None) -> str:
        line = 0
        if isinstance(obj, _Map):
            line = obj.key_lines.get(key, obj.line) if key else obj.line
        return f"{source}:{line}" if line else source

    if not isinstance(data, dict):
        raise ScenarioError([f"{source}: expected a mapping with 'name' and 'faults'"])
    for key in data:
        if key not in ("name", "description", "seed", "faults"):
            problems.append(
                f"{where(data, key)}: unknown key {key!r}; expected name, description, seed, faults"
            )
    name = data.get("name")
    if not isinstance(name, str) or not name:
        problems.append(f"{where(data, 'name')}: 'name' must be a non-empty string")
    seed = data.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        problems.append(f"{where(data, 'seed')}: 'seed' must be an integer, got {seed!r}")
        seed = 0
    raw_faults = data.get("faults", [])
    if raw_faults is None:
        raw_faults = []
    if not isinstance(raw_faults, list):
        problems.append(f"{where(data, 'faults')}: 'faults' must be a list")
        raw_faults = []
    faults: list[Fault] = []
    for i, raw in enumerate(raw_faults):
        fault = _parse_fault(i, raw, where, problems)
        if fault is not None:
            faults.append(fault)
    if problems:
        raise ScenarioError(problems)
    return Scenario(
        name=str(name),
        description=str(data.get("description", "")),
        seed=int(seed),
        faults=tuple(faults),
        source=source,
    )


def _parse_fault(i: int, raw: Any, where: Callable[..., str], problems: list[str]) -> Fault | None:
    label = f"faults[{i}]"
    if not isinstance(raw, dict):
        problems.append(f"{where(raw)}: {label} must be a mapping with a 'kind'")
        return None
    kind = raw.get("kind")
    if kind not in FAULT_KINDS:
        problems.append(
            f"{where(raw, 'kind')}: {label}.kind is {kind!r}; expected one of {', '.join(FAULT_KINDS)}"
        )
        return None
    before = len(problems)
    for key in raw:
        if key not in _ALLOWED[kind]:
            problems.append(
                f"{where(raw, key)}: {label}.{key} is not valid for kind {kind!r}; "
                f"expected one of {', '.join(sorted(_ALLOWED[kind]))}"
            )
    args: dict[str, Any] = {"kind": kind, "index": i, "line": getattr(raw, "line", 0)}

    def get(key: str, conv: Callable[[Any], Any], check: str | None = None) -> Any:
        if key not in raw:
            return None
        try:
            return conv(raw[key])
        except (TypeError, ValueError) as exc:
            problems.append(f"{where(raw, key)}: {label}.{key}: {check or exc}")
            return None

    def positive_int(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"must be a positive integer, got {v!r}")
        return v

    def count(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"must be a whole number >= 0, got {v!r}")
        return v

    def rate(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
            raise ValueError(f"must be a number between 0 and 1, got {v!r}")
        return float(v)

    def status(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not 400 <= v <= 599:
            raise ValueError(f"must be an HTTP error status 400-599, got {v!r}")
        return v

    def regex(v: Any) -> re.Pattern[str]:
        if not isinstance(v, str):
            raise ValueError(f"must be a regular expression string, got {v!r}")
        try:
            return re.compile(v)
        except re.error as exc:
            raise ValueError(f"is not a valid regular expression: {exc}") from None

    def text(v: Any) -> str:
        if not isinstance(v, str):
            raise ValueError(f"must be a string, got {v!r}")
        return v

    def ms(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise ValueError(f"must be a number of milliseconds >= 0, got {v!r}")
        return float(v)

    start = get("start", parse_duration) or 0.0
    end = get("end", parse_duration)
    if end is not None and end <= start:
        problems.append(f"{where(raw, 'end')}: {label}.end must be after start")
    args["window"] = Window(start, end)
    if (p := get("path", regex)) is not None:
        args["path"] = p
    if (r := get("rate", rate)) is not None:
        args["rate"] = r
    if kind == "drift":
        if (e := get("every", parse_duration)) is not None:
            if e <= 0:
                problems.append(f"{where(raw, 'every')}: {label}.every must be > 0")
            args["interval_s"] = e
        else:
            problems.append(f"{where(raw)}: {label} (drift) needs 'every', e.g. every: 30s")
        ent = get("entity", text)
        if not ent:
            problems.append(f"{where(raw)}: {label} (drift) needs 'entity' (a logical name)")
        args["entity"] = ent or ""
        for key in ("delete", "insert", "modify"):
            if (n := get(key, count)) is not None:
                args[key] = n
        if not any(args.get(k) for k in ("delete", "insert", "modify")):
            problems.append(f"{where(raw)}: {label} (drift) needs delete, insert or modify > 0")
        vals = raw.get("values", {})
        if not isinstance(vals, dict):
            problems.append(f"{where(raw, 'values')}: {label}.values must be a mapping")
        else:
            args["values"] = dict(vals)
    elif (ev := get("every", positive_int)) is not None:
        args["every"] = ev
    if kind == "latency":
        if "ms" not in raw:
            problems.append(f"{where(raw)}: {label} (latency) needs 'ms'")
        args["ms"] = get("ms", ms) or 0.0
        args["jitter_ms"] = get("jitter_ms", ms) or 0.0
    elif kind in ("error", "outage"):
        if (s := get("status", status)) is not None:
            args["status"] = s
        elif kind == "error":
            problems.append(f"{where(raw)}: {label} (error) needs 'status', e.g. 503")
        args["code"] = get("code", text) or ""
        args["message"] = get("message", text) or ""
    elif kind == "timeout":
        args["hang_s"] = get("hang", parse_duration) or 300.0
    elif kind == "throttle":
        ra = get("retry_after", parse_duration)
        args["retry_after_s"] = max(1, int(round(ra))) if ra is not None else 5
        lim = raw.get("limit", "requests")
        if lim not in THROTTLE_LIMITS:
            problems.append(
                f"{where(raw, 'limit')}: {label}.limit is {lim!r}; expected one of "
                f"{', '.join(THROTTLE_LIMITS)}"
            )
        args["limit"] = lim
    elif kind == "token_expiry":
        args["at_s"] = get("at", parse_duration)
        args["lifetime_s"] = get("lifetime", parse_duration)
        if args["at_s"] is None and args["lifetime_s"] is None:
            problems.append(f"{where(raw)}: {label} (token_expiry) needs 'at' or 'lifetime'")
    if len(problems) > before:
        return None
    return Fault(**args)


def load_scenario(path: str | Path) -> Scenario:
    """Reads and validates a scenario YAML file; errors name the file and line."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError([f"{p}: cannot read scenario: {exc.strerror}"]) from None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ScenarioError(
            [f"{p}{line}: not valid YAML: {getattr(exc, 'problem', exc)}"]
        ) from None
    return parse_scenario(data, str(p))


@dataclass
class Decision:
    """What the injector decided for one request, in the order the server applies it."""

    outage_status: int | None = None
    reset: bool = False
    hang_s: float | None = None
    latency_s: float = 0.0
    throttle: Fault | None = None
    error: Fault | None = None
    malformed: bool = False

    def labels(self) -> list[str]:
        out: list[str] = []
        if self.outage_status is not None:
            out.append("outage")
        if self.reset:
            out.append("reset")
        if self.hang_s is not None:
            out.append("timeout")
        if self.latency_s:
            out.append("latency")
        if self.throttle is not None:
            out.append("throttle")
        if self.error is not None:
            out.append("error")
        if self.malformed:
            out.append("malformed")
        return out


class FaultInjector:
    """Decides, per request, which faults fire. Deterministic for a seed and request order.

    Every fault has its own random stream (seeded by scenario seed and fault index) and its own
    match counter, so adding a fault does not change the decisions of the others.
    """

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self._rngs = {f.index: random.Random(f"{scenario.seed}:{f.index}") for f in scenario.faults}
        self._matches = {f.index: 0 for f in scenario.faults}

    def _fires(self, fault: Fault, target: str, elapsed_s: float) -> bool:
        if not fault.window.active(elapsed_s):
            return False
        if fault.path is not None and not fault.path.search(target):
            return False
        self._matches[fault.index] += 1
        if fault.every is not None and self._matches[fault.index] % fault.every != 0:
            return False
        if fault.rate < 1.0:
            return self._rngs[fault.index].random() < fault.rate
        return True

    def decide(self, method: str, path_qs: str, elapsed_s: float) -> Decision:
        """Draws this request's faults; `path_qs` is the path with its query string."""
        target = f"{method} {path_qs}"
        d = Decision()
        for f in self.scenario.faults:
            if f.kind in ("token_expiry", "drift"):
                continue
            if f.kind == "outage":
                if f.window.active(elapsed_s) and (f.path is None or f.path.search(target)):
                    d.outage_status = f.status
                continue
            if not self._fires(f, target, elapsed_s):
                continue
            if f.kind == "latency":
                jitter = (
                    self._rngs[f.index].uniform(-f.jitter_ms, f.jitter_ms) if f.jitter_ms else 0
                )
                d.latency_s += max(0.0, f.ms + jitter) / 1000.0
            elif f.kind == "reset":
                d.reset = True
            elif f.kind == "timeout":
                d.hang_s = f.hang_s
            elif f.kind == "throttle":
                d.throttle = d.throttle or f
            elif f.kind == "error":
                d.error = d.error or f
            elif f.kind == "malformed":
                d.malformed = True
        return d

    def token_expired(self, issued_s: float, elapsed_s: float) -> bool:
        """True when a token issued at `issued_s` is expired at `elapsed_s` (scenario seconds)."""
        for f in self.scenario.of_kind("token_expiry"):
            if f.at_s is not None and issued_s < f.at_s <= elapsed_s:
                return True
            if f.lifetime_s is not None and elapsed_s - issued_s >= f.lifetime_s:
                return True
        return False

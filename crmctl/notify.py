"""Announcing incidents: Teams (Workflows webhook) and a generic JSON webhook, in the background.

Why it is built this way:

* Never blocking the control room: `submit` only puts the event on a queue; one worker per
  channel delivers in order, so a Teams outage (or a 429 asking for a minute's patience) never
  delays the operator, the other channel, or the next key press.
* At most 4 requests per second per webhook (Teams' documented connector limit), enforced as a
  sliding window: no 1-second window ever holds a fifth request, bursts of up to 4 included.
* Retries with exponential backoff and jitter on 5xx, 408 and transport errors; on 429 the
  server's Retry-After (seconds or an HTTP date) is honoured exactly, never undercut.
* Every outcome is journalled (`notify.delivered` / `notify.failed`), so a failed page is
  visible on every operator's screen and in the evidence pack, not just in one process's log.
* The webhook URL is a secret (`${env:NAME}`): it is read only at the moment of sending and
  never appears in an entry, a log line or an exception text; channels are named by their
  environment variable instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import os
import random
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, Sequence

import aiohttp
from yarl import URL

from crmctl.cards import Payload, teams_payload, webhook_payload
from crmctl.config.values import Secret, SecretUnavailable
from crmctl.identity import Actor
from crmctl.incidents import IncidentEvent

log = logging.getLogger(__name__)

DELIVERED = "notify.delivered"
FAILED = "notify.failed"
NOTIFY_KINDS: tuple[str, ...] = (DELIVERED, FAILED)
"""Journal kinds of delivery outcomes (read by the Incidents screen and `incident show`)."""

TEAMS_RATE = 4
"""Requests per second a Teams webhook accepts."""


class _Appender:
    async def append(self, kind: str, payload: Mapping[str, Any], *, actor: Actor) -> Any: ...


@dataclass(frozen=True)
class Channel:
    """One destination: its name, the secret URL, and how an event becomes its body."""

    name: str
    """``teams`` or ``webhook``: what the journal and the screens call it."""
    secret: Secret
    build: Callable[[IncidentEvent], Payload]

    @property
    def label(self) -> str:
        """Safe to print: the name and the environment variable, never the URL."""
        return f"{self.name} ({self.secret})"


def channels_from_config(config: Any) -> list[Channel]:
    """The channels `incidents.notify` configures (none when it names no webhook)."""
    notify = config.incidents.notify
    project = getattr(config, "project", "")
    channels = []
    if notify.teams_webhook is not None:
        channels.append(Channel("teams", notify.teams_webhook, lambda e: teams_payload(e, project=project)))
    if notify.webhook is not None:
        channels.append(Channel("webhook", notify.webhook, lambda e: webhook_payload(e, project=project)))
    return channels


@dataclass(frozen=True)
class Outcome:
    """How one delivery ended (also journalled)."""

    channel: str
    event: str
    event_seq: int
    incident: int
    ok: bool
    attempts: int
    status: int | None
    reason: str = ""
    bytes: int = 0
    truncated: bool = False

    def to_json(self, target: str) -> dict[str, Any]:
        data: dict[str, Any] = {
            "channel": self.channel,
            "target": target,
            "event": self.event,
            "event_seq": self.event_seq,
            "incident": self.incident,
            "attempts": self.attempts,
            "status": self.status,
            "bytes": self.bytes,
            "truncated": self.truncated,
        }
        if self.reason:
            data["reason"] = self.reason
        return data


class SlidingWindowLimiter:
    """At most `limit` acquisitions in any window of `per` seconds (monotonic time).

    Stricter than a token bucket of the same rate, which lets a full bucket plus its refill
    through in one second; Teams counts requests per second, so the window is what matters.
    """

    def __init__(
        self,
        limit: int = TEAMS_RATE,
        per: float = 1.0,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.limit = limit
        self.per = per
        self._monotonic = monotonic
        self._sleep = sleep
        self._sent: deque[float] = deque()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self._monotonic()
                while self._sent and now - self._sent[0] >= self.per:
                    self._sent.popleft()
                if len(self._sent) < self.limit:
                    self._sent.append(now)
                    return
                await self._sleep(self.per - (now - self._sent[0]))


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


def describe_error(exc: BaseException) -> str:
    """A reason that names what went wrong without quoting the URL (aiohttp's texts quote it)."""
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        # Not str(os_error): asyncio's "Connect call failed ('10.0.0.5', 443)" names the host.
        number = getattr(getattr(exc, "os_error", None), "errno", None)
        return f"cannot connect ({os.strerror(number)})" if isinstance(number, int) else "cannot connect"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server disconnected"
    if isinstance(exc, aiohttp.InvalidURL):
        return "the webhook URL is not a valid URL"
    return f"transport error ({type(exc).__name__})"


def redact(text: str, url: str) -> str:
    """`text` with the URL, its query and its path removed (belt and braces for any message)."""
    if not url:
        return text
    pieces = [url]
    try:
        parts = URL(url)
        pieces += [parts.raw_query_string, parts.raw_path, parts.host or ""]
    except Exception:  # noqa: BLE001 - an unparsable URL: the whole string is removed anyway
        pass
    for piece in sorted({p for p in pieces if p and len(p) > 3}, key=len, reverse=True):
        text = text.replace(piece, "***")
    return text


class Notifier:
    """Delivers incident events to every channel in the background and journals each outcome."""

    def __init__(
        self,
        store: Any,
        *,
        actor: Actor,
        channels: Sequence[Channel],
        env: Mapping[str, str] | None = None,
        max_attempts: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_retry_after: float = 600.0,
        timeout: float = 10.0,
        rate: int = TEAMS_RATE,
        per: float = 1.0,
        queue_size: int = 1000,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> None:
        """
        Args:
            store: where outcomes are journalled (`append`).
            actor: who the outcome entries are stamped with (the session that sent).
            channels: where to deliver; empty makes `submit` a no-op.
            env: where secrets are read at send time (default `os.environ`).
            max_attempts: tries per delivery, the first included.
            backoff: first retry delay in seconds, doubled each time (with jitter), up to
                `max_backoff`.
            max_retry_after: the longest Retry-After obeyed; a longer one fails the delivery
                (and says so) rather than holding the queue for hours.
            timeout: per request, in seconds.
            rate, per: at most `rate` requests per `per` seconds, per channel.
            on_outcome: called (in the event loop) after each outcome is journalled; the app
                uses it to pop a toast when a delivery fails.
        """
        self.store = store
        self.actor = actor
        self.channels = list(channels)
        self.env = os.environ if env is None else env
        self.max_attempts = max(1, max_attempts)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self.timeout = timeout
        self.on_outcome = on_outcome
        self._queues = {c.name: asyncio.Queue[IncidentEvent](maxsize=queue_size) for c in self.channels}
        self._limiters = {c.name: SlidingWindowLimiter(rate, per) for c in self.channels}
        self.outcomes: deque[Outcome] = deque(maxlen=200)
        """The latest outcomes of this session, newest last (the journal holds them all)."""
        self._overflow: set[asyncio.Task[None]] = set()
        self._pending = 0

    # ---------------------------------------------------------------- the non-blocking side

    def submit(self, event: IncidentEvent) -> None:
        """Queues `event` for every channel and returns at once (never waits, never raises).

        A full queue (a channel down for a long time) drops the event for that channel and
        journals the drop as a failure, so even that is visible.
        """
        for channel in self.channels:
            try:
                self._queues[channel.name].put_nowait(event)
                self._pending += 1
            except asyncio.QueueFull:
                outcome = Outcome(channel.name, event.kind, event.seq, event.incident.number, False, 0, None,
                                  "dropped: the notification queue is full (channel down for long?)")
                task = asyncio.get_running_loop().create_task(self._record(channel, outcome))
                self._overflow.add(task)
                task.add_done_callback(self._overflow.discard)

    @property
    def pending(self) -> int:
        """Events waiting or being delivered, over all channels."""
        return self._pending

    async def flush(self, timeout: float | None = None) -> bool:
        """Waits until every queued event has an outcome; False if `timeout` ran out first."""
        joins = [q.join() for q in self._queues.values()]
        if not joins:
            return True
        try:
            await asyncio.wait_for(asyncio.gather(*joins), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            return False
        if self._overflow:
            await asyncio.gather(*list(self._overflow), return_exceptions=True)
        return True

    # ---------------------------------------------------------------- the delivering side

    async def run(self) -> None:
        """Delivers until cancelled (one worker per channel, one HTTP session for all)."""
        if not self.channels:
            await asyncio.Event().wait()  # nothing to deliver: idle until cancelled
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout, raise_for_status=False) as session:
            await asyncio.gather(*(self._worker(session, c) for c in self.channels))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Notifier]:
        """Runs the notifier for the duration of the block (the CLI: act, then flush, then leave)."""
        task = asyncio.create_task(self.run())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _worker(self, session: aiohttp.ClientSession, channel: Channel) -> None:
        queue = self._queues[channel.name]
        while True:
            event = await queue.get()
            try:
                outcome = await self._deliver(session, channel, event)
                await self._record(channel, outcome)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one bad event must not stop the channel
                log.exception("notification to %s failed unexpectedly", channel.label)
            finally:
                self._pending -= 1
                queue.task_done()

    async def _deliver(self, session: aiohttp.ClientSession, channel: Channel, event: IncidentEvent) -> Outcome:
        number = event.incident.number
        try:
            payload = channel.build(event)
        except Exception as exc:  # noqa: BLE001 - a card that cannot be built is a failure to report
            return Outcome(channel.name, event.kind, event.seq, number, False, 0, None, f"cannot build the message: {exc}")
        try:
            url = channel.secret.reveal(self.env)
        except SecretUnavailable as exc:
            return Outcome(channel.name, event.kind, event.seq, number, False, 0, None, str(exc), payload.size, payload.truncated)
        status: int | None = None
        reason = ""
        attempt = 0
        while attempt < self.max_attempts:
            attempt += 1
            await self._limiters[channel.name].acquire()
            retry_after: float | None = None
            try:
                async with session.post(
                    url, data=payload.body, headers={"Content-Type": "application/json; charset=utf-8"}
                ) as response:
                    status = response.status
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                    await response.read()
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, asyncio.TimeoutError, TimeoutError, OSError) as exc:
                status, reason = None, redact(describe_error(exc), url)
            if status is not None and 200 <= status < 300:
                return Outcome(channel.name, event.kind, event.seq, number, True, attempt, status, "",
                               payload.size, payload.truncated)
            if status is not None:
                reason = f"HTTP {status}"
            if status is not None and status != 429 and status != 408 and status < 500:
                break  # 400, 401, 404, 413: trying again will not help
            if attempt >= self.max_attempts:
                break
            delay = self._delay(attempt, retry_after if status == 429 else None)
            if delay is None:
                reason = f"HTTP 429 with Retry-After {retry_after:.0f} s, longer than the {self.max_retry_after:.0f} s allowed"
                break
            log.info("notification to %s: %s, retrying in %.1f s", channel.label, reason, delay)
            await asyncio.sleep(delay)
        return Outcome(channel.name, event.kind, event.seq, number, False, attempt, status,
                       f"{reason} after {attempt} attempt{'s' if attempt != 1 else ''}", payload.size, payload.truncated)

    def _delay(self, attempt: int, retry_after: float | None) -> float | None:
        """Retry-After when the server gave one (never less), else backoff with jitter."""
        if retry_after is not None:
            return None if retry_after > self.max_retry_after else retry_after
        base = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        return base * random.uniform(0.5, 1.0)

    async def _record(self, channel: Channel, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        kind = DELIVERED if outcome.ok else FAILED
        try:
            await self.store.append(kind, outcome.to_json(str(channel.secret)), actor=self.actor)
        except Exception:  # noqa: BLE001 - a closed store at shutdown: the log must do
            log.warning("could not journal %s for %s (incident %s)", kind, channel.label, outcome.incident)
        if self.on_outcome is not None:
            try:
                self.on_outcome(outcome)
            except Exception:  # noqa: BLE001 - a UI callback must not kill delivery
                log.exception("on_outcome callback failed")


__all__ = [
    "Channel",
    "DELIVERED",
    "FAILED",
    "NOTIFY_KINDS",
    "Notifier",
    "Outcome",
    "SlidingWindowLimiter",
    "TEAMS_RATE",
    "channels_from_config",
    "describe_error",
    "parse_retry_after",
    "redact",
]

"""The durable state store: one SQLite file per cutover, shared by every process on the host.

Why it is built this way:

* The journal is the single source of truth (DESIGN.md §3): every check result and every
  operator action is an entry in an append-only, hash-chained table. Screens, the evidence pack
  and `crmctl verify` only ever read projections of it.
* Several processes write the same file at once (two SSH sessions, the engine, cron, the CLI).
  SQLite in WAL mode gives one writer at a time and readers that are never blocked; each append
  takes the write lock first (`BEGIN IMMEDIATE`) and only then reads the previous (seq, hash), so
  two appenders can never fork the chain. `busy_timeout` is generous because waiting a little
  for another process's few-millisecond transaction is always better than failing an operator's
  action.
* `synchronous=FULL`: an action is shown as acknowledged only after `append` returns, and that
  must survive a power cut, not just a killed process.
* Two connections per Store: one writer and one reader. A reader on the writer's connection
  could see rows of a transaction that has not committed yet (and might never), and UI reads
  would queue behind a writer waiting for another process's lock.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import (
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
    TypeVar,
)

import aiosqlite

from crmctl.clock import Clock, SystemClock
from crmctl.identity import Actor, current_actor
from crmctl.journal import (
    GENESIS_HASH,
    VERIFY_CHUNK,
    VERIFY_SQL,
    ChainVerifier,
    JournalEntry,
    VerifyReport,
    canonical_entry,
    canonical_payload,
    entry_hash,
    open_readonly,
    readonly_uri,
    verify_file,
)
from crmctl.model import CheckResult, iso, parse_iso

__all__ = [
    "Actor",
    "current_actor",
    "JournalEntry",
    "VerifyReport",
    "Store",
    "StoreError",
    "verify_file",
    "GENESIS_HASH",
    "RESULT_KIND",
    "SCHEMA_VERSION",
    "MIGRATIONS",
    "Migration",
]

T = TypeVar("T")

RESULT_KIND = "check.result"
"""The journal kind of a check result; its payload is `CheckResult.to_json()`."""

BUSY_TIMEOUT_MS = 30_000
"""How long a statement waits for another process's lock before failing.

Write transactions last milliseconds; 30 s covers a slow disk, a large migration or a
checkpoint on a loaded jump host, and is still short enough that a wedged process is noticed.
"""

WATCH_BATCH = 500
"""At most this many entries per change-feed batch, so a screen catching up after a long pause
renders in steps instead of freezing on one huge batch."""


class StoreError(Exception):
    """The state file cannot be used as asked (read-only, closed, too new, not a state file)."""


# --------------------------------------------------------------------------------------------
# schema


@dataclass(frozen=True)
class Migration:
    """One schema step; all pending steps run in a single transaction, in order."""

    version: int
    description: str
    statements: tuple[str, ...]


_GENESIS_SQL = "'" + GENESIS_HASH + "'"

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "append-only hash-chained journal",
        (
            """CREATE TABLE journal (
                seq       INTEGER PRIMARY KEY,
                ts        TEXT NOT NULL,
                operator  TEXT NOT NULL,
                host      TEXT NOT NULL,
                kind      TEXT NOT NULL,
                payload   TEXT NOT NULL,
                prev_hash TEXT NOT NULL,
                hash      TEXT NOT NULL
            )""",
            # Defence in depth: the hash chain detects edits, these refuse them in the first place
            # (anyone with write access can drop them, which is why verify never relies on them).
            """CREATE TRIGGER journal_no_update BEFORE UPDATE ON journal
               BEGIN SELECT RAISE(ABORT, 'journal is append-only: UPDATE refused'); END""",
            """CREATE TRIGGER journal_no_delete BEFORE DELETE ON journal
               BEGIN SELECT RAISE(ABORT, 'journal is append-only: DELETE refused'); END""",
            # A writer that skipped BEGIN IMMEDIATE (or any other tool) cannot fork the chain.
            f"""CREATE TRIGGER journal_append_in_order BEFORE INSERT ON journal
               WHEN NEW.seq IS NOT (SELECT IFNULL(MAX(seq), 0) + 1 FROM journal)
                 OR NEW.prev_hash IS NOT IFNULL(
                      (SELECT hash FROM journal ORDER BY seq DESC LIMIT 1), {_GENESIS_SQL})
               BEGIN SELECT RAISE(ABORT, 'journal append must continue the chain'); END""",
        ),
    ),
    Migration(
        2,
        "latest_result projection; kind and per-check indexes",
        (
            "CREATE INDEX journal_kind ON journal(kind, seq)",
            # Partial expression index: results_history and time travel read one check's results
            # newest-first without parsing every payload. Queries must spell the same expression
            # and the literal kind for SQLite to use it. ts is included so that time travel's
            # walk back to `until` reads only the index (30x faster than a row lookup per step).
            """CREATE INDEX journal_result_check
               ON journal(json_extract(payload, '$.check_id'), seq, ts)
               WHERE kind = 'check.result'""",
            """CREATE TABLE latest_result (
                check_id TEXT PRIMARY KEY,
                seq      INTEGER NOT NULL,
                payload  TEXT NOT NULL
            )""",
            # Backfill from the journal (SQLite returns the bare column of the MAX row).
            """INSERT INTO latest_result(check_id, seq, payload)
               SELECT json_extract(payload, '$.check_id'), MAX(seq), payload FROM journal
               WHERE kind = 'check.result' AND json_extract(payload, '$.check_id') IS NOT NULL
               GROUP BY json_extract(payload, '$.check_id')""",
        ),
    ),
)

SCHEMA_VERSION = MIGRATIONS[-1].version

_OWN_TABLES = {"journal", "latest_result"}

_COLUMNS = "seq, ts, operator, host, kind, payload, prev_hash, hash"
_INSERT = f"INSERT INTO journal({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_UPSERT_LATEST = """INSERT INTO latest_result(check_id, seq, payload) VALUES (?, ?, ?)
    ON CONFLICT(check_id) DO UPDATE SET seq = excluded.seq, payload = excluded.payload
    WHERE excluded.seq > latest_result.seq"""
_CHECK_ID = "json_extract(payload, '$.check_id')"


def _as_of_sql(indexed: bool) -> str:
    """The newest result per check among entries stamped at or before :until, from the journal.

    The recursive part is a skip-scan over the per-check index (one probe per distinct check),
    so time travel costs O(checks x log n) rather than a scan of every result ever journalled.
    SQLite's planner prefers journal_kind for MIN() here, hence INDEXED BY (only when the index
    exists: a v1 file opened read-only has to do without).
    """
    hint = "INDEXED BY journal_result_check" if indexed else ""
    return f"""
    WITH RECURSIVE ids(cid) AS (
        SELECT MIN({_CHECK_ID}) FROM journal {hint} WHERE kind = 'check.result'
        UNION ALL
        SELECT (SELECT MIN({_CHECK_ID}) FROM journal {hint}
                WHERE kind = 'check.result' AND {_CHECK_ID} > ids.cid)
        FROM ids WHERE ids.cid IS NOT NULL
    )
    SELECT j.seq, j.payload FROM ids JOIN journal AS j ON j.seq = (
        SELECT seq FROM journal {hint}
        WHERE kind = 'check.result' AND {_CHECK_ID} = ids.cid AND ts <= :until
        ORDER BY seq DESC LIMIT 1)
    ORDER BY ids.cid"""


_END_OF_TIME = "9999-12-31T23:59:59.999999Z"


# --------------------------------------------------------------------------------------------
# files


def _fsync_dir(folder: Path) -> None:
    """Makes a newly created file's directory entry durable (a new file is not, by itself)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _prepare_file(path: Path) -> None:
    """Creates the state folder (0700) and file (0600) before SQLite touches them.

    SQLite would create the file with the process umask (typically world-readable); the journal
    holds who did what during a cutover and must not be. SQLite gives the -wal and -shm files the
    permissions of the database file, so they follow. We do not change the umask: it is
    process-wide and other threads may be creating files at the same moment. Existing folders
    and files are left as they are, so an administrator may deliberately share a state file with
    a group.
    """
    folder = path.parent
    if not folder.is_dir():
        os.makedirs(folder, mode=0o700, exist_ok=True)
        os.chmod(folder, 0o700)
        _fsync_dir(folder.parent)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o600)  # exact, whatever the umask
    finally:
        os.close(fd)
    _fsync_dir(folder)


async def _connect(database: str, *, uri: bool = False) -> aiosqlite.Connection:
    """An aiosqlite connection in autocommit mode (we issue BEGIN/COMMIT ourselves).

    Its worker thread is made a daemon when aiosqlite allows it: a caller that forgets
    `close()` must not hang the CLI at interpreter exit. Committed data is safe either way;
    an interrupted transaction is rolled back by SQLite, exactly as after a SIGKILL.
    """
    conn = aiosqlite.connect(database, uri=uri, isolation_level=None)
    thread = getattr(conn, "_thread", None)
    if thread is not None and not thread.is_alive():
        thread.daemon = True
    return await conn


def _not_before(now: datetime, head_ts: Any) -> datetime:
    """`now`, or the head entry's timestamp when the writer's clock is behind it.

    An unreadable head timestamp (an altered file: `verify` reports it) does not block
    appending; the writer's own clock is used then.
    """
    if not isinstance(head_ts, str):
        return now
    try:
        head = parse_iso(head_ts)
    except (TypeError, ValueError):
        return now
    return head if head > now else now


def _busy(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and (
        "locked" in str(exc) or "busy" in str(exc)
    )


def _swallow(task: asyncio.Future[Any]) -> None:
    """Marks a shielded write's exception as retrieved when its caller was cancelled."""
    if not task.cancelled():
        task.exception()


# --------------------------------------------------------------------------------------------
# the store


class Store:
    """The journal and its projections in one SQLite file. Create with `await Store.open(...)`."""

    def __init__(
        self,
        path: Path,
        reader: aiosqlite.Connection,
        writer: aiosqlite.Connection | None,
        clock: Clock,
    ) -> None:
        self._path = path
        self._reader = reader
        self._writer = writer
        self._clock = clock
        self._write_lock = asyncio.Lock()
        self._inflight: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._version = 0

    # ---------------------------------------------------------------- lifecycle

    @classmethod
    async def open(
        cls, path: str | Path, *, clock: Clock | None = None, readonly: bool = False
    ) -> Store:
        """Opens (creating and migrating if need be) the state file at `path`.

        readonly=True never writes, never migrates, and works on a copy in a read-only folder;
        `append` then raises StoreError.
        """
        p = Path(os.path.abspath(Path(path).expanduser()))
        clock = clock or SystemClock()
        if readonly:
            if not p.is_file():
                raise FileNotFoundError(f"no state file at {p}")
            store = cls(p, await cls._connect_readonly(p), None, clock)
            try:
                await store._check_readonly()
            except BaseException:
                await store.close()
                raise
            return store

        _prepare_file(p)
        writer = await _connect(str(p))
        reader: aiosqlite.Connection | None = None
        try:
            await cls._configure(writer)
            await writer.execute_fetchall("PRAGMA journal_mode = WAL")
            reader = await _connect(str(p))
            await cls._configure(reader)
            await reader.execute_fetchall("PRAGMA query_only = ON")
        except BaseException as exc:
            for conn in (reader, writer):
                if conn is not None:
                    await conn.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise StoreError(f"{p}: cannot open state file: {exc}") from exc
            raise
        store = cls(p, reader, writer, clock)
        try:
            await store._migrate()
        except BaseException as exc:
            await store.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise StoreError(f"{p}: cannot open state file: {exc}") from exc
            raise
        return store

    @staticmethod
    async def _configure(conn: aiosqlite.Connection) -> None:
        await conn.execute_fetchall(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # Per connection: whichever connection checkpoints the WAL (the last one to close does)
        # must sync as hard as the writer does.
        await conn.execute_fetchall("PRAGMA synchronous = FULL")

    @staticmethod
    async def _connect_readonly(p: Path) -> aiosqlite.Connection:
        """mode=ro, falling back to immutable=1 for a WAL file in a read-only folder (see
        `journal.open_readonly` for why that fallback is safe)."""
        last: Exception | None = None
        for immutable in (False, True):
            conn = await _connect(readonly_uri(p, immutable=immutable), uri=True)
            try:
                await Store._configure(conn)
                await conn.execute_fetchall("SELECT count(*) FROM sqlite_master")
                return conn
            except sqlite3.OperationalError as exc:
                await conn.close()
                last = exc
            except sqlite3.DatabaseError as exc:
                await conn.close()
                raise StoreError(f"{p}: not a state file: {exc}") from exc
        raise StoreError(f"{p}: cannot open read-only: {last}")

    async def _check_readonly(self) -> None:
        tables = await self._read("SELECT name FROM sqlite_master WHERE type='table'")
        names = {r[0] for r in tables}
        if "journal" not in names:
            raise StoreError(f"{self._path}: not a crmctl state file (no journal table)")
        (self._version,) = (await self._read("PRAGMA user_version"))[0]

    async def _migrate(self) -> None:
        """Brings the schema to SCHEMA_VERSION in one transaction.

        The version is read again under the write lock: when several processes open a new file
        at once, exactly one of them migrates and the others find the work done.
        """
        (version,) = (await self._read("PRAGMA user_version"))[0]
        if version == SCHEMA_VERSION:
            self._version = version
            return

        async def work(w: aiosqlite.Connection) -> int:
            (current,) = list(await w.execute_fetchall("PRAGMA user_version"))[0]
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"{self._path}: schema v{current} is newer than this crmctl understands"
                    f" (v{SCHEMA_VERSION}); upgrade crmctl"
                )
            if current == 0:
                tables = {
                    r[0]
                    for r in await w.execute_fetchall(
                        "SELECT name FROM sqlite_master WHERE type='table'"
                        " AND name NOT LIKE 'sqlite_%'"
                    )
                }
                if tables - _OWN_TABLES:
                    raise StoreError(
                        f"{self._path}: not a crmctl state file (has tables"
                        f" {', '.join(sorted(tables))}); refusing to add a journal to it"
                    )
            for migration in MIGRATIONS:
                if migration.version > current:
                    for statement in migration.statements:
                        await w.execute_fetchall(statement)
            if current < SCHEMA_VERSION:
                await w.execute_fetchall(f"PRAGMA user_version = {SCHEMA_VERSION}")
            return SCHEMA_VERSION

        self._version = await self._write(work)

    async def close(self) -> None:
        """Waits for writes in flight, then closes (the last connection checkpoints the WAL)."""
        if self._closed:
            return
        self._closed = True
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def path(self) -> Path:
        return self._path

    @property
    def readonly(self) -> bool:
        return self._writer is None

    @property
    def schema_version(self) -> int:
        return self._version

    # ---------------------------------------------------------------- plumbing

    async def _read(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        if self._closed:
            raise StoreError("store is closed")
        return list(await self._reader.execute_fetchall(sql, params))

    async def _write(self, work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Runs `work` in one IMMEDIATE transaction, shielded from the caller's cancellation.

        A write spans several round trips to the connection thread; cancelling it half-way
        would leave the connection inside an open transaction holding the file's write lock.
        So the transaction runs in its own task: a cancelled caller stops waiting, the write
        still commits (or rolls back) cleanly, and `close()` waits for it.
        """
        if self._closed:
            raise StoreError("store is closed")
        if self._writer is None:
            raise StoreError(f"{self._path}: store is open read-only")
        task = asyncio.ensure_future(self._transaction(self._writer, work))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        task.add_done_callback(_swallow)
        return await asyncio.shield(task)

    async def _transaction(
        self, w: aiosqlite.Connection, work: Callable[[aiosqlite.Connection], Awaitable[T]]
    ) -> T:
        async with self._write_lock:
            try:
                await w.execute_fetchall("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if _busy(exc):
                    raise StoreError(
                        f"{self._path}: another process has held the write lock for more than"
                        f" {BUSY_TIMEOUT_MS // 1000} s"
                    ) from exc
                raise
            try:
                result = await work(w)
                await w.execute_fetchall("COMMIT")
            except BaseException:
                try:
                    await w.execute_fetchall("ROLLBACK")
                except Exception:
                    pass  # COMMIT may have failed after SQLite already rolled back
                raise
            return result

    def _entry(self, row: Sequence[Any]) -> JournalEntry:
        seq, ts, operator, host, kind, payload, prev_hash, hash_ = row
        try:
            data = json.loads(payload)
            when = parse_iso(ts)
        except (TypeError, ValueError) as exc:
            raise StoreError(
                f"{self._path}: entry {seq} cannot be read ({exc}); the state file was altered"
                " (run crmctl verify)"
            ) from exc
        return JournalEntry(seq, when, operator, host, kind, data, prev_hash, hash_)

    # ---------------------------------------------------------------- writing

    @staticmethod
    def _prepare(
        items: Iterable[tuple[str, Mapping[str, Any]]], actor: Actor
    ) -> list[tuple[str, str, dict[str, Any]]]:
        """Validates and serialises everything before the transaction starts, so a bad payload
        raises (TypeError) without having taken the lock or written anything."""
        if (
            not isinstance(actor, Actor)
            or not isinstance(actor.operator, str)
            or not isinstance(actor.host, str)
        ):
            raise TypeError("actor must be an Actor(operator: str, host: str)")
        prepared = []
        for kind, payload in items:
            if not isinstance(kind, str) or not kind:
                raise TypeError("kind must be a non-empty string")
            text = canonical_payload(payload)
            data = json.loads(text)
            if kind == RESULT_KIND:
                try:
                    result = CheckResult.from_json(data)
                except (KeyError, ValueError, TypeError, AttributeError) as exc:
                    raise ValueError(
                        f"a {RESULT_KIND} payload must be CheckResult.to_json(): {exc}"
                    ) from exc
                if not isinstance(result.check_id, str) or not result.check_id:
                    raise ValueError(f"a {RESULT_KIND} payload needs a non-empty check_id")
            prepared.append((kind, text, data))
        return prepared

    async def _append_prepared(
        self,
        prepared: list[tuple[str, str, dict[str, Any]]],
        actor: Actor,
        precondition: Callable[[aiosqlite.Connection], Awaitable[None]] | None = None,
    ) -> list[JournalEntry]:
        async def work(w: aiosqlite.Connection) -> list[JournalEntry]:
            if precondition is not None:
                await precondition(w)
            # Read the head only now, under the write lock: this is what serialises appenders.
            head = list(
                await w.execute_fetchall(
                    "SELECT seq, hash, ts FROM journal ORDER BY seq DESC LIMIT 1"
                )
            )
            seq, prev = (head[0][0], head[0][1]) if head else (0, GENESIS_HASH)
            # The timestamp is taken under the lock too, and never before the head's: processes
            # on different clocks (a rehearsal clock, the wall clock, a skewed host) must not
            # make journal time run backwards, since time travel finds "as of 02:14" by a
            # binary search that needs ts order = seq order.
            ts = _not_before(self._clock.now(), head[0][2] if head else None)
            ts_text = iso(ts)
            ts = parse_iso(ts_text)
            rows, latest, entries = [], [], []
            for kind, text, data in prepared:
                seq += 1
                digest = entry_hash(
                    prev, canonical_entry(seq, ts_text, actor.operator, actor.host, kind, data)
                )
                rows.append((seq, ts_text, actor.operator, actor.host, kind, text, prev, digest))
                entries.append(
                    JournalEntry(seq, ts, actor.operator, actor.host, kind, data, prev, digest)
                )
                if kind == RESULT_KIND:
                    latest.append((data["check_id"], seq, text))
                prev = digest
            await (await w.executemany(_INSERT, rows)).close()
            if latest and self._version >= 2:
                await (await w.executemany(_UPSERT_LATEST, latest)).close()
            return entries

        return await self._write(work)

    async def append(self, kind: str, payload: Mapping[str, Any], *, actor: Actor) -> JournalEntry:
        """Appends one entry; returns only after it is committed (durable).

        Raises TypeError, before writing anything, if the payload is not JSON-serialisable.
        """
        prepared = self._prepare([(kind, payload)], actor)
        return (await self._append_prepared(prepared, actor))[0]

    async def append_many(
        self, items: Sequence[tuple[str, Mapping[str, Any]]], *, actor: Actor
    ) -> list[JournalEntry]:
        """Appends several entries in one transaction (one fsync): all or none."""
        prepared = self._prepare(items, actor)
        if not prepared:
            return []
        return await self._append_prepared(prepared, actor)

    async def append_checked(
        self,
        kind: str,
        payload: Mapping[str, Any],
        *,
        actor: Actor,
        kinds: Iterable[str],
        check: Callable[[list[JournalEntry]], None],
    ) -> JournalEntry:
        """Appends one entry only if `check` accepts the journal as it is at that instant.

        `check` receives every entry of `kinds` read INSIDE the write transaction, after the
        write lock is taken, so two operators in two processes cannot both complete the same
        step: the second sees the first's entry and is refused. If `check` raises, nothing is
        written and the exception propagates to the caller unchanged.
        """
        prepared = self._prepare([(kind, payload)], actor)
        wanted = sorted(set(kinds))

        async def precondition(w: aiosqlite.Connection) -> None:
            marks = ",".join("?" * len(wanted))
            rows = await w.execute_fetchall(
                f"SELECT seq, ts, operator, host, kind, payload, prev_hash, hash FROM journal"
                f" WHERE kind IN ({marks}) ORDER BY seq",
                wanted,
            ) if wanted else []
            check([self._entry(row) for row in rows])

        return (await self._append_prepared(prepared, actor, precondition))[0]

    async def append_result(self, result: CheckResult, *, actor: Actor) -> JournalEntry:
        """Journals a check result and updates the latest_result projection atomically."""
        return await self.append(RESULT_KIND, result.to_json(), actor=actor)

    # ---------------------------------------------------------------- reading

    async def last_seq(self) -> int:
        """The seq of the newest committed entry (0 for an empty journal)."""
        return int((await self._read("SELECT IFNULL(MAX(seq), 0) FROM journal"))[0][0])

    async def entries(
        self,
        after_seq: int = 0,
        *,
        kinds: Iterable[str] | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> list[JournalEntry]:
        """Entries with seq > after_seq, ascending; optionally only some kinds, only those
        stamped at or before `until`, and at most `limit` of them."""
        sql = f"SELECT {_COLUMNS} FROM journal WHERE seq > ?"
        params: list[Any] = [after_seq]
        if kinds is not None:
            wanted = [kinds] if isinstance(kinds, str) else list(dict.fromkeys(kinds))
            if not wanted:
                return []
            sql += f" AND kind IN ({', '.join('?' * len(wanted))})"
            params += wanted
        if until is not None:
            sql += " AND ts <= ?"
            params.append(iso(until))
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(max(0, int(limit)))
        return [self._entry(row) for row in await self._read(sql, params)]

    async def latest_results(self, until: datetime | None = None) -> dict[str, CheckResult]:
        """The newest result per check, keyed and ordered by check id.

        Without `until`, from the latest_result projection (one small table: cheap enough for
        every Overview refresh). With `until` ("what did we know at 02:14?"), recomputed from the
        journal: the newest result, in journal order, among entries stamped at or before it.
        """
        if until is None and self._version >= 2:
            rows = await self._read("SELECT check_id, payload FROM latest_result ORDER BY check_id")
            return {cid: CheckResult.from_json(json.loads(payload)) for cid, payload in rows}
        bound = _END_OF_TIME if until is None else iso(until)
        rows = await self._read(_as_of_sql(self._version >= 2), {"until": bound})
        out: dict[str, CheckResult] = {}
        for _seq, payload in rows:
            result = CheckResult.from_json(json.loads(payload))
            out[result.check_id] = result
        return out

    async def latest_result_entries(self, check_ids: Iterable[str] = ()) -> dict[str, tuple[CheckResult, int, str]]:
        """The newest result per check (of `check_ids`; of every check when empty) with the seq
        and hash of the entry that holds it.

        Gates, decisions and incidents cite a result by its entry (seq + hash prove it in the
        chain); one read of the projection joined to the journal answers that for every check
        at once, consistent with `latest_results` and whatever the journal's length.
        """
        if self._version >= 2:
            rows = await self._read(
                "SELECT l.seq, j.hash, l.payload FROM latest_result l JOIN journal j ON j.seq = l.seq"
                " ORDER BY l.check_id"
            )
        else:  # a schema-1 file opened read-only (not migrated): the newest result per check
            rows = await self._read(
                f"SELECT seq, hash, payload FROM journal WHERE seq IN (SELECT MAX(seq) FROM journal"
                f" WHERE kind = 'check.result' GROUP BY {_CHECK_ID}) ORDER BY seq"
            )
        wanted = set(check_ids)
        out: dict[str, tuple[CheckResult, int, str]] = {}
        for seq, digest, payload in rows:
            result = CheckResult.from_json(json.loads(payload))
            if not wanted or result.check_id in wanted:
                out[result.check_id] = (result, seq, digest)
        return out

    async def results_history(self, check_id: str, limit: int = 100) -> list[CheckResult]:
        """The last `limit` results of one check, oldest first (ready for a sparkline)."""
        rows = await self._read(
            f"SELECT payload FROM journal WHERE kind = 'check.result' AND {_CHECK_ID} = ?"
            " ORDER BY seq DESC LIMIT ?",
            (check_id, max(0, int(limit))),
        )
        return [CheckResult.from_json(json.loads(payload)) for (payload,) in reversed(rows)]

    def watch(
        self, interval: float = 0.25, *, after_seq: int | None = None
    ) -> AsyncIterator[list[JournalEntry]]:
        """The change feed: yields batches of new entries committed by any process.

        Starts after `after_seq`, or after the newest entry when iteration begins. The pattern
        for a screen without gaps: `s = await store.last_seq()`, load state up to s, then
        `async for batch in store.watch(after_seq=s)`. Polls `PRAGMA data_version` (no table
        read) every `interval` and queries only when some connection committed. Cancelling the
        consuming task, or closing the store, ends it cleanly.
        """
        return self._watch(interval, after_seq)

    async def _watch(
        self, interval: float, after_seq: int | None
    ) -> AsyncIterator[list[JournalEntry]]:
        try:
            last = await self.last_seq() if after_seq is None else after_seq
            seen_version: int | None = None
            while not self._closed:
                (version,) = (await self._read("PRAGMA data_version"))[0]
                if version != seen_version:
                    batch = await self.entries(last, limit=WATCH_BATCH)
                    if batch:
                        last = batch[-1].seq
                        yield batch
                        if len(batch) == WATCH_BATCH:
                            continue  # more waiting: no sleep, and re-query next time round
                    seen_version = version
                await asyncio.sleep(interval)
        except (StoreError, ValueError):
            if self._closed:  # the store was closed under us: the feed simply ends
                return
            raise

    # ---------------------------------------------------------------- integrity

    async def verify(self, *, anchor: tuple[int, str] | None = None) -> VerifyReport:
        """Recomputes the whole chain from the stored columns (see `journal.ChainVerifier`).

        `anchor`: a (seq, hash) recorded outside the file, e.g. in an evidence manifest;
        detects truncation and wholesale rewrites, which the chain alone cannot.
        """
        verifier = ChainVerifier(anchor)
        after = 0
        while True:
            rows = await self._read(VERIFY_SQL, (after, VERIFY_CHUNK))
            if not verifier.feed(rows) or len(rows) < VERIFY_CHUNK:
                break
            after = rows[-1][0]
        return verifier.finish()

    async def snapshot(self, dest: str | Path) -> Path:
        """Writes a consistent, self-contained copy of the state file to `dest` (mode 0600).

        For the evidence pack: taken online without stopping writers (`VACUUM INTO` reads one
        snapshot), switched to rollback-journal mode so that opening or verifying the copy
        later never creates -wal/-shm files beside it. `dest` must not exist.
        """
        d = Path(os.path.abspath(Path(dest).expanduser()))
        if d.exists():
            raise FileExistsError(f"{d} already exists")
        d.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(d, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.fchmod(fd, 0o600)
        os.close(fd)
        if self._closed:
            raise StoreError("store is closed")
        try:
            await asyncio.to_thread(_vacuum_into, self._path, d)
        except BaseException:
            d.unlink(missing_ok=True)
            raise
        return d


def _vacuum_into(source: Path, dest: Path) -> None:
    """Copies through a private read-only connection (the store's reader is query_only, which
    SQLite applies to VACUUM INTO as well), then makes the copy a rollback-journal database."""
    src = open_readonly(source)
    try:
        src.execute("VACUUM INTO ?", (str(dest),))
    finally:
        src.close()
    conn = sqlite3.connect(str(dest), isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = DELETE").fetchall()
    finally:
        conn.close()

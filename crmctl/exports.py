"""Full CSV lists behind a check result (every missing key, not just the first 20), beside the journal.

A result in the journal carries the first few keys; the auditor and the data engineer need all
of them. Lists are written to `<state folder>/exports/` and the result references each file by
path, row count and SHA-256. Because the digest is journalled in the hash chain, an export that
is edited afterwards no longer matches its result.

Files are content-addressed (`<check>.<list>.<digest prefix>.csv`): a check re-run every minute
that finds the same 120 missing contacts writes no new file, so a night of runs leaves one file
per distinct answer instead of thousands. A list is streamed in parts (one per key-range
partition, written concurrently) and joined in partition order, so it stays sorted and memory
stays bounded by one batch.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

EXPORTS_FOLDER = "exports"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def exports_folder(state: Path) -> Path:
    """The folder beside the state file that holds the exports of that cutover."""
    return Path(state).parent / EXPORTS_FOLDER


@dataclass(frozen=True)
class ExportedFile:
    """One finished export, as referenced from a result's values."""

    path: Path
    rows: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "rows": self.rows, "sha256": self.sha256}


class ExportPart:
    """One partition's share of a list: rows kept in memory, spilled to a temporary file when large.

    Most lists are short (a few hundred keys), and a temporary file per partition would cost
    more than the list itself; a long one (every key of a table missing) never sits in memory.
    """

    SPILL_ROWS = 10_000

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._rows: list[Sequence[Any]] = []
        self._file: Any = None
        self._writer: Any = None
        self.path: Path | None = None
        self.rows = 0

    def write(self, rows: Iterable[Sequence[Any]]) -> None:
        before = len(self._rows)
        self._rows.extend(rows)
        self.rows += len(self._rows) - before
        if len(self._rows) >= self.SPILL_ROWS:
            self._spill()

    def _spill(self) -> None:
        if self._file is None:
            handle, name = tempfile.mkstemp(prefix=".part-", suffix=".csv", dir=self._folder)
            self.path = Path(name)
            self._file = os.fdopen(handle, "w", newline="", encoding="utf-8")
            self._writer = csv.writer(self._file)
        self._writer.writerows(self._rows)
        self._rows.clear()

    def body(self) -> Iterator[bytes]:
        """The part's CSV lines (without header), in chunks."""
        if self._file is not None:
            self._spill()
            self._file.close()
            assert self.path is not None
            with open(self.path, "rb") as spilled:
                while chunk := spilled.read(1 << 20):
                    yield chunk
            return
        if self._rows:
            buffer = io.StringIO()
            csv.writer(buffer).writerows(self._rows)
            yield buffer.getvalue().encode("utf-8")

    def discard(self) -> None:
        self._rows.clear()
        if self._file is not None:
            self._file.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)


class CsvExport:
    """A sorted list exported as one CSV file, assembled from parts written in any order.

    Args:
        folder: Where the file goes (created when missing).
        check_id: Names the file, with `name`.
        name: Which list this is ("missing", "extra", ...).
        header: The CSV header row.
    """

    def __init__(self, folder: Path, check_id: str, name: str, header: Sequence[str]) -> None:
        self.folder = Path(folder)
        # Keys of customer records: readable by the operator's account only, like the state file.
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.check_id = check_id
        self.name = name
        self.header = list(header)
        self._parts: dict[int, ExportPart] = {}

    def part(self, index: int) -> ExportPart:
        """The part for partition `index` (parts are joined in ascending index order)."""
        if index not in self._parts:
            self._parts[index] = ExportPart(self.folder)
        return self._parts[index]

    def finish(self) -> ExportedFile:
        """Joins the parts under the header into the content-addressed file; returns its reference."""
        digest = hashlib.sha256()
        rows = 0
        handle, tmp_name = tempfile.mkstemp(prefix=".export-", suffix=".csv", dir=self.folder)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(handle, "wb") as out:
                head = _csv_line(self.header)
                out.write(head)
                digest.update(head)
                for index in sorted(self._parts):
                    part = self._parts[index]
                    rows += part.rows
                    for chunk in part.body():
                        out.write(chunk)
                        digest.update(chunk)
            sha = digest.hexdigest()
            final = self.folder / f"{_safe(self.check_id)}.{_safe(self.name)}.{sha[:16]}.csv"
            if final.exists():
                tmp.unlink()  # the same answer as an earlier run: keep the earlier file
            else:
                os.replace(tmp, final)
            return ExportedFile(final, rows, sha)
        finally:
            tmp.unlink(missing_ok=True)
            self.discard_parts()

    def discard(self) -> None:
        """Drops everything written so far (the run was abandoned or restarted another way)."""
        self.discard_parts()

    def discard_parts(self, indexes: Iterable[int] | None = None) -> None:
        """Drops the given parts (all when None), e.g. those of a comparison that restarts."""
        for index in list(self._parts) if indexes is None else list(indexes):
            part = self._parts.pop(index, None)
            if part is not None:
                part.discard()


def _csv_line(row: Sequence[Any]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(row)
    return buffer.getvalue().encode("utf-8")


def _safe(text: str) -> str:
    return _UNSAFE.sub("_", text).strip("._") or "export"

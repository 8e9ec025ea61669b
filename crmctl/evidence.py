"""The audit evidence pack (Sprint 4.4.4 "archived evidence for audit readiness"): export and verify.

`export` writes a self-contained folder an auditor can trust without trusting us:

```
index.html  evidence.md           the report (same document, two renderings)
data/*.json data/*.csv            the same figures as data: every table, the whole journal
screens/*.svg                     the control room's key screens as the operators saw them
journal/state.db                  a consistent copy of the journal (Store.snapshot)
manifest.json                     SHA-256 and size of every file, and the journal head
SHA256SUMS                        `sha256sum -c` format, covering manifest.json too
```

The journal copy is the authority; every other file is a rendering of it, built from the copy
(not the live file) so that report and journal describe the same head. The pack is written
into a private temporary folder and renamed into place only once complete and clean: a pack
that exists is a whole pack. All text passes the `Scrubber`, and before the rename every file
is scanned for the known secret values and token shapes: a leak fails the export rather than
ship.

`verify` re-checks every hash, that no file was added or removed, the journal's hash chain,
and that the journal head equals the one the manifest recorded. This module never imports
Textual: screenshots come from a callable the composition root hands in.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import os
import re
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Sequence

from crmctl import __version__
from crmctl.clock import Clock, SystemClock
from crmctl.evidence_doc import Document, slug
from crmctl.evidence_html import render_html
from crmctl.evidence_md import render_markdown
from crmctl.evidence_model import PackMeta, build_document
from crmctl.identity import Actor
from crmctl.journal import verify_file
from crmctl.model import iso
from crmctl.safetext import safe_text
from crmctl.scrubber import Scrubber
from crmctl.store import Store

FORMAT = "crmctl-evidence/1"
MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
JOURNAL_COPY = "journal/state.db"
EXPORTED_KIND = "evidence.exported"

Screenshotter = Callable[[Any, Path], Sequence[tuple[str, str, str]]]
"""(config, journal copy) -> [(name, title, svg text)]: renders the key screens headless.

Runs in a worker thread (it may start its own event loop), reading the pack's journal copy so
the screenshots show exactly the head the pack records."""


class EvidenceError(Exception):
    """The pack could not be written; nothing was left at the destination."""


class EvidenceLeak(EvidenceError):
    """A secret was found in a file of the pack; the pack was discarded."""


@dataclass(frozen=True)
class ExportResult:
    path: Path
    manifest_sha256: str
    head_seq: int
    head_hash: str
    entries: int
    files: int
    journal_ok: bool
    journal_reason: str
    warnings: tuple[str, ...] = ()
    recorded_seq: int | None = None
    """The seq of the `evidence.exported` entry, when the export was journalled."""


@dataclass
class PackReport:
    """What `verify` found: ok only when every check passed."""

    path: Path
    problems: list[str] = field(default_factory=list)
    files: int = 0
    head_seq: int = 0
    head_hash: str = ""
    entries: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# export


async def export(
    config: Any,
    state: Store | str | Path,
    out_dir: str | Path,
    screenshots: Screenshotter | None = None,
    *,
    clock: Clock | None = None,
    actor: Actor | None = None,
    extra_secrets: Sequence[str] = (),
    record: bool = True,
) -> ExportResult:
    """Writes the evidence pack of `config`'s journal into `out_dir` (which must not exist yet,
    or be an empty folder).

    Args:
        state: The open `Store` (or the state file's path, opened read-only).
        screenshots: Renders the key screens; None leaves them out (the pack says so).
        actor: Who exports (recorded in the pack and, with `record`, in the journal).
        extra_secrets: Values to keep out beyond the config's own (e.g. the live bearer token).
        record: Journal the export (`evidence.exported`, with the manifest hash) when the
            store is writable; that entry is the anchor a later `verify` can be held against.

    Raises:
        EvidenceLeak: a secret would have been shipped; nothing was written.
        EvidenceError, FileExistsError: the destination is taken or the pack could not be built.
    """
    clock = clock or SystemClock()
    out = Path(os.path.abspath(Path(out_dir).expanduser()))
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not an empty folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    own_store = not isinstance(state, Store)
    store = await Store.open(state, readonly=True) if own_store else state  # type: ignore[arg-type]
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        result = await _build(config, store, tmp, screenshots, clock, actor, extra_secrets)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if own_store:
            await store.close()
        raise
    result = _moved(result, out)
    if record and not store.readonly and actor is not None:
        entry = await store.append(
            EXPORTED_KIND,
            {
                "path": str(out),
                "manifest_sha256": result.manifest_sha256,
                "head_seq": result.head_seq,
                "head_hash": result.head_hash,
                "files": result.files,
                "journal_ok": result.journal_ok,
            },
            actor=actor,
        )
        result = _moved(result, out, recorded_seq=entry.seq)
    if own_store:
        await store.close()
    return result


def _moved(result: ExportResult, path: Path, recorded_seq: int | None = None) -> ExportResult:
    return ExportResult(
        path, result.manifest_sha256, result.head_seq, result.head_hash, result.entries, result.files,
        result.journal_ok, result.journal_reason, result.warnings,
        recorded_seq if recorded_seq is not None else result.recorded_seq,
    )


async def _build(
    config: Any,
    store: Store,
    root: Path,
    screenshots: Screenshotter | None,
    clock: Clock,
    actor: Actor | None,
    extra_secrets: Sequence[str],
) -> ExportResult:
    copy = root / JOURNAL_COPY
    await store.snapshot(copy)
    report = await asyncio.to_thread(verify_file, copy)
    copy_store = await Store.open(copy, readonly=True)
    try:
        entries = await copy_store.entries()
    finally:
        await copy_store.close()
    head_seq = entries[-1].seq if entries else 0
    head_hash = entries[-1].hash if entries else ""
    scrub = Scrubber.for_config(config, extra=extra_secrets)
    warnings: list[str] = []
    if not report.ok:
        warnings.append(f"The journal does not verify: {report.reason}. Treat every figure below as suspect.")

    shots: list[tuple[str, str]] = []
    if screenshots is None:
        warnings.append("Screenshots were not taken for this export.")
    else:
        try:
            rendered = await asyncio.to_thread(screenshots, config, copy)
        except Exception as exc:  # noqa: BLE001 - a pack without pictures beats no pack
            warnings.append(f"Screenshots could not be taken: {scrub.text(str(exc), multiline=False)}")
            rendered = []
        (root / "screens").mkdir(exist_ok=True)
        for name, title, svg in rendered:
            rel = f"screens/{slug(name)}.svg"
            _write(root / rel, scrub.text(svg))
            shots.append((rel, title))

    by = f"{actor.operator}@{actor.host}" if actor else "unknown"
    generated_at = clock.now()
    config_text = ""
    try:
        config_text = scrub.text(config.redacted())
    except Exception as exc:  # noqa: BLE001 - a config that cannot render itself is noted, not fatal
        warnings.append(f"The configuration could not be rendered: {scrub.text(str(exc), multiline=False)}")
    meta = PackMeta(
        project=scrub.text(str(getattr(config, "project", "")), multiline=False),
        generated_at=generated_at,
        generated_by=scrub.text(by, multiline=False),
        config_path=scrub.text(str(getattr(config, "path", "")), multiline=False),
        head_seq=head_seq,
        head_hash=head_hash,
        entries=len(entries),
        journal_ok=report.ok,
        journal_reason=scrub.text(report.reason, multiline=False),
        screenshots=shots,
        warnings=warnings,
        config_text=config_text,
    )
    doc = build_document(config, entries, meta, scrub)
    _write(root / "index.html", render_html(doc))
    _write(root / "evidence.md", render_markdown(doc))
    _write_data(root, doc, entries, scrub, config_text)

    leaks = _scan(root, scrub)
    if leaks:
        raise EvidenceLeak(
            "The evidence pack was not written: " + "; ".join(leaks)
            + ". Secrets must never reach the journal; rotate the secret and remove its source."
        )
    files = _listing(root)
    manifest = {
        "format": FORMAT,
        "project": meta.project,
        "generated_at": iso(generated_at),
        "generated_by": meta.generated_by,
        "crmctl": __version__,
        "journal": {
            "path": JOURNAL_COPY,
            "entries": len(entries),
            "head_seq": head_seq,
            "head_hash": head_hash,
            "verified": report.ok,
            "reason": meta.journal_reason,
        },
        "files": [{"path": rel, "sha256": sha256_file(root / rel), "bytes": (root / rel).stat().st_size} for rel in files],
    }
    _write(root / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    manifest_sha = sha256_file(root / MANIFEST)
    _write(root / SUMS, render_sums(manifest, manifest_sha))
    return ExportResult(
        root, manifest_sha, head_seq, head_hash, len(entries), len(files) + 2, report.ok,
        meta.journal_reason, tuple(warnings),
    )


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)


_NUMBER = re.compile(r"^[+-]?(\d[\d,]*)?(\.\d+)?(e[+-]?\d+)?%?$", re.IGNORECASE)


def _csv_cell(value: Any) -> str:
    """Spreadsheets run cells that start with = + - @ as formulas: such text gets a leading '."""
    text = "" if value is None else safe_text(str(value), limit=None)
    if text and text[0] in "=+-@\t\r" and not _NUMBER.match(text):
        return "'" + text
    return text


def _csv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([_csv_cell(c) for c in columns])
    for row in rows:
        writer.writerow([_csv_cell(c) for c in row])
    return buf.getvalue()


def _write_data(root: Path, doc: Document, entries: Sequence[Any], scrub: Scrubber, config_text: str) -> None:
    data = root / "data"
    used: set[str] = set()
    for name, table in doc.tables():
        base, n = slug(name), 1
        fname = base
        while fname in used:
            n += 1
            fname = f"{base}-{n}"
        used.add(fname)
        _write(data / f"{fname}.csv", _csv(table.columns, table.rows))
    _write(data / "evidence.json", json.dumps(doc.to_json(), indent=1, ensure_ascii=False) + "\n")
    journal = [scrub.value(e.to_json()) for e in entries]
    # One entry per line: still one JSON array, greppable, and written by the C encoder.
    lines = ",\n".join(json.dumps(j, ensure_ascii=False, sort_keys=True) for j in journal)
    _write(data / "journal.json", "[\n" + lines + ("\n" if lines else "") + "]\n")
    _write(
        data / "journal.csv",
        _csv(
            ("seq", "ts", "operator", "host", "kind", "payload", "prev_hash", "hash"),
            [(j["seq"], j["ts"], j["operator"], j["host"], j["kind"],
              json.dumps(j["payload"], ensure_ascii=False, sort_keys=True), j["prev_hash"], j["hash"]) for j in journal],
        ),
    )
    if config_text:
        _write(data / "config.redacted.yaml", config_text)


def _listing(root: Path) -> list[str]:
    """Every file under `root` (relative, '/'-separated, sorted), manifest and sums excluded."""
    out = []
    for path in sorted(root.rglob("*")):
        if path.is_file() or path.is_symlink():
            rel = path.relative_to(root).as_posix()
            if rel not in (MANIFEST, SUMS):
                out.append(rel)
    return out


def _scan(root: Path, scrub: Scrubber) -> list[str]:
    found = []
    for rel in _listing(root):
        for what in scrub.leaks((root / rel).read_bytes()):
            found.append(f"{rel} contains {what}")
    return found


def render_sums(manifest: dict[str, Any], manifest_sha: str) -> str:
    """SHA256SUMS: every file of the manifest plus manifest.json, as `sha256sum -c` reads it."""
    lines = {f["path"]: f["sha256"] for f in manifest["files"]}
    lines[MANIFEST] = manifest_sha
    return "".join(f"{digest}  {path}\n" for path, digest in sorted(lines.items()))


# --------------------------------------------------------------------------------------------
# verify


def verify(pack_dir: str | Path) -> PackReport:
    """Re-checks a pack: SHA256SUMS, manifest.json, every file's hash and size, no file added or
    missing, the journal's chain, and the journal head against the manifest. Never writes."""
    root = Path(pack_dir)
    report = PackReport(root)
    problems = report.problems
    manifest_path, sums_path = root / MANIFEST, root / SUMS
    if not root.is_dir():
        problems.append(f"{root} is not a folder")
        return report
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = {str(f["path"]): (str(f["sha256"]), int(f["bytes"])) for f in manifest["files"]}
        journal = manifest["journal"]
        if manifest.get("format") != FORMAT:
            problems.append(f"{MANIFEST}: unknown format {manifest.get('format')!r}")
    except FileNotFoundError:
        problems.append(f"{MANIFEST} is missing")
        return report
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        problems.append(f"{MANIFEST} is not a valid manifest ({type(exc).__name__}: {exc})")
        return report
    manifest_sha = sha256_file(manifest_path)
    try:
        sums = sums_path.read_bytes()
    except FileNotFoundError:
        problems.append(f"{SUMS} is missing")
        sums = b""
    if sums:
        listed = _parse_sums(sums)
        if listed.get(MANIFEST) not in (None, manifest_sha):
            problems.append(f"{MANIFEST}: SHA-256 differs from {SUMS} (manifest altered)")
        if sums != render_sums(manifest, listed.get(MANIFEST, manifest_sha)).encode("utf-8"):
            problems.append(f"{SUMS} does not match the manifest (altered)")
    present = set(_listing(root))
    for rel in sorted(set(files) - present):
        problems.append(f"{rel}: listed in the manifest but missing")
    for rel in sorted(present - set(files)):
        problems.append(f"{rel}: not in the manifest (added after export)")
    for rel in sorted(set(files) & present):
        digest, size = files[rel]
        path = root / rel
        if path.is_symlink():
            problems.append(f"{rel}: is a symbolic link")
            continue
        if path.stat().st_size != size:
            problems.append(f"{rel}: size {path.stat().st_size} bytes, manifest says {size}")
        elif sha256_file(path) != digest:
            problems.append(f"{rel}: SHA-256 mismatch (content altered)")
    report.files = len(present) + sum(1 for p in (manifest_path, sums_path) if p.is_file())
    _verify_journal(root, journal, report)
    return report


def _parse_sums(data: bytes) -> dict[str, str]:
    out = {}
    for line in data.decode("utf-8", errors="replace").splitlines():
        digest, sep, path = line.partition("  ")
        if sep and re.fullmatch(r"[0-9a-f]{64}", digest):
            out[path] = digest
    return out


def _verify_journal(root: Path, journal: Any, report: PackReport) -> None:
    problems = report.problems
    try:
        rel = str(journal["path"])
        head_seq = int(journal["head_seq"])
        head_hash = str(journal["head_hash"])
    except (KeyError, TypeError, ValueError):
        problems.append(f"{MANIFEST}: the journal record is incomplete")
        return
    path = root / rel
    if not path.is_file():
        problems.append(f"{rel}: the journal copy is missing")
        return
    try:
        chain = verify_file(path, anchor=(head_seq, head_hash) if head_seq else None)
    except (sqlite3.DatabaseError, OSError) as exc:
        problems.append(f"{rel}: cannot be read as a journal ({exc})")
        return
    report.entries = chain.entries
    report.head_seq, report.head_hash = chain.head_seq, chain.head_hash
    if not chain.ok:
        problems.append(f"{rel}: journal chain broken at entry {chain.first_bad_seq}: {chain.reason}")
    elif (chain.head_seq, chain.head_hash if head_seq else "") != (head_seq, head_hash):
        problems.append(
            f"{rel}: journal head is entry {chain.head_seq} {chain.head_hash}, but the manifest records "
            f"entry {head_seq} {head_hash}"
        )


def default_out_dir(config: Any, now: datetime) -> Path:
    """Where the control room puts a pack when nobody says: beside the state file, by time."""
    state = Path(getattr(config, "state", Path(".crmctl/state.db")))
    return state.parent / "evidence" / now.strftime("%Y%m%dT%H%M%SZ")

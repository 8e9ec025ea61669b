"""Generates the demo world: a legacy source CRM, its imperfect Dynamics copy, and the truth.

Everything comes from one `random.Random(seed)` consumed in a fixed order, so a seed always
gives byte-identical databases. Rows are built in memory as dicts (one pass, no per-row SQL)
and written with one `executemany` per table inside one transaction: at scale 1 that is
~106,000 source rows and as many Dynamics rows in a few seconds.

The order of events the data encodes (see timeline.py): a bulk load over two days with
batches and a re-run, a lookup fix-up pass, rehearsal leftovers, Marketing Sync switched on
too early, the watermark, the freeze, the final delta, and writes that ignored the freeze.
"""

from __future__ import annotations

import math
import os
import random
import sqlite3
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from crmctl.demo import words
from crmctl.demo.schema import ACCOUNT, ENTITIES, OPPORTUNITY, STAGES, WATERMARK_DDL, DemoEntity
from crmctl.demo.system import INTEGRATION_PATTERNS, build_async_operations, build_plugin_traces
from crmctl.demo.timeline import Timeline, fmt
from crmctl.demo.truth import (
    GENERATOR_VERSION,
    CountSnapshot,
    GroundTruth,
    derive_entity,
    like_prefix,
    summarise_jobs,
    summarise_plugins,
)
from crmctl.emulator.storage import EmulatorData

DEFAULT_SEED = 20261128
SOURCE_DB = "source.db"
DATAVERSE_DB = "dataverse.db"
GROUND_TRUTH = "ground_truth.json"

BASE_VOLUMES: dict[str, int] = {"account": 20_000, "contact": 62_000, "opportunity": 24_000}
"""Source rows per entity at scale 1.0 (contacts above the 50,000 aggregate limit on purpose)."""

DEFECTS: dict[str, dict[str, int]] = {
    # Planted defects at scale 1.0; other scales multiply and round, keeping at least 1.
    "account": {
        "new": 2,            # created in source after the watermark, inserted by the final delta
        "missing": 37,       # never arrived in Dynamics (failed twice in the bulk load)
        "dup_pairs": 8,      # two source accounts share an accountnumber; both migrated
        "null_name": 6,      # name lost on the way (null in Dynamics)
        "lost_lookup": 4,    # primarycontactid not set by the fix-up pass
        "post_freeze": 5,    # updated in source after the freeze (ERP Sync still writing)
        "delta_lag": 4,      # changed between watermark and freeze, not applied by the delta
        "delta_applied": 40,  # changed between watermark and freeze, applied by the delta
        "whitespace": 12,    # trailing space in the source name, trimmed in Dynamics
        "case": 9,           # city in capitals in source, proper case in Dynamics
        "rounding": 14,      # revenue rounded to whole units in Dynamics
        "retry_pct": 3,      # percent of accounts re-loaded in the re-run batch (timing only)
        "extra": 3,          # rehearsal smoke-test accounts left in Dynamics
    },
    "contact": {
        "new": 6,
        "missing": 120,
        "dup_pairs": 15,     # the same person entered twice in the source (same email)
        "null_lastname": 25,
        "lost_lookup": 48,   # parentcustomerid null although the source has account_id
        "post_freeze": 14,
        "delta_lag": 23,
        "delta_applied": 150,
        "case": 20,          # email in mixed case in source, lower case in Dynamics
        "whitespace": 11,    # trailing space in source last_name
        "marketing_dupes": 4,  # created by Marketing Sync in Dynamics only, duplicating emails
        "extra": 2,          # rehearsal smoke-test contacts
    },
    "opportunity": {
        "new": 4,
        "missing": 15,
        "wrong_parent": 9,   # parentaccountid points at another account
        "lost_lookup": 5,
        "post_freeze": 7,
        "delta_lag": 6,
        "delta_applied": 60,
        "rounding": 10,      # estimatedvalue rounded to whole units
        "extra": 1,
    },
}

BY_PK: dict[str, str] = {e.name: e.target.primary_id for e in ENTITIES}
_INDUSTRY = ACCOUNT.field("industrycode").expected
_STEP = OPPORTUNITY.field("stepname").expected
_STATE = OPPORTUNITY.field("statecode").expected
_CLOSE = OPPORTUNITY.field("estimatedclosedate").expected

_UPDATERS = words.OWNERS + ("svc_etl", "svc_erp_sync", "svc_marketing")
_FREEZE_BREAKERS = ("svc_erp_sync", "svc_erp_sync", "svc_erp_sync", "m.chen", "j.alvarez")


def scaled(base: int, scale: float) -> int:
    """A defect count at a scale: proportional, but never less than one if planted at all."""
    return 0 if base <= 0 else max(1, round(base * scale))


class _Picker:
    """Hands out distinct row indexes in a seeded random order, so planted defects never overlap.

    Disjoint defects keep the ground truth exact and legible: a missing row is not also a
    duplicate, a lagging row is not also a whitespace mismatch.
    """

    def __init__(self, rng: random.Random, n: int, reserved: Iterable[int] = ()) -> None:
        self._order = list(range(n))
        rng.shuffle(self._order)
        self.used: set[int] = set(reserved)

    def take(self, count: int, ok: Callable[[int], bool] | None = None, *, what: str = "") -> list[int]:
        out: list[int] = []
        if count <= 0:
            return out
        for i in self._order:
            if i in self.used or (ok is not None and not ok(i)):
                continue
            out.append(i)
            self.used.add(i)
            if len(out) == count:
                return out
        raise ValueError(f"demo world too small to plant {count} {what} defects; use a larger scale")


def _schedule(rng: random.Random, n: int, start: int, end: int, batch: int = 2_000) -> list[int]:
    """Load times for `n` rows written in key order, in batches across [start, end).

    Each batch starts in its own slot (with jitter) and takes 35-60 % of it, which gives the
    bursty `createdon` profile of a real bulk load with gaps between batches.
    """
    if n <= 0:
        return []
    batches = math.ceil(n / batch)
    slot = (end - start) / batches
    times: list[int] = []
    for b in range(batches):
        lo = b * batch
        m = min(n, lo + batch) - lo
        begin = start + b * slot + rng.uniform(0, slot * 0.25)
        duration = slot * rng.uniform(0.35, 0.6)
        times.extend(int(begin + duration * j / m) for j in range(m))
    return times


@dataclass
class _World:
    """The generated rows before they are written: source and target per entity."""

    source: dict[str, list[dict[str, Any]]]
    target: dict[str, list[dict[str, Any]]]
    removed: dict[str, set[int]]
    """Indexes of source rows whose target row is deleted (missing in Dynamics)."""
    asyncoperations: list[dict[str, Any]]
    plugintracelogs: list[dict[str, Any]]


def _build(seed: int, scale: float, tl: Timeline) -> _World:
    rng = random.Random(seed)

    def guid() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    n_acc = round(BASE_VOLUMES["account"] * scale)
    n_con = round(BASE_VOLUMES["contact"] * scale)
    n_opp = round(BASE_VOLUMES["opportunity"] * scale)
    if min(n_acc, n_con, n_opp) < 50:
        raise ValueError(f"scale {scale} is too small for the demo world (needs at least 0.0025)")
    d_acc = {k: scaled(v, scale) for k, v in DEFECTS["account"].items() if k != "retry_pct"}
    d_con = {k: scaled(v, scale) for k, v in DEFECTS["contact"].items()}
    d_opp = {k: scaled(v, scale) for k, v in DEFECTS["opportunity"].items()}
    width = {name: max(6, len(str(n))) for name, n in (("account", n_acc), ("contact", n_con), ("opportunity", n_opp))}

    def ordinary_update(created: int) -> int:
        """Most rows last changed long before the load; 6 % changed during the load window."""
        if rng.random() < 0.06:
            return rng.randint(tl.load_start, tl.watermark - 600)
        return created + int((tl.history_end - created) * rng.random())

    # ---- source: accounts ------------------------------------------------------------------
    industries = rng.choices([w[0] for w in words.INDUSTRIES], weights=[w[2] for w in words.INDUSTRIES], k=n_acc)
    cities = rng.choices(words.CITIES, k=n_acc)
    owners = rng.choices(words.OWNERS, k=n_acc)
    numbers = rng.sample(range(1_000_000, 10_000_000), n_acc)
    accounts: list[dict[str, Any]] = []
    domains: list[str] = []
    cores: list[str] = []
    acc_created: list[int] = []
    for i in range(n_acc):
        core = rng.choice(words.COMPANY_CORES)
        kind = rng.choice(words.COMPANY_KINDS)
        suffix = rng.choice(words.COMPANY_SUFFIXES)
        name = f"{core} {kind} {suffix}".rstrip()
        created = rng.randint(tl.history_start, tl.history_end - 86_400)
        acc_created.append(created)
        cores.append(core)
        domains.append("".join(ch for ch in f"{core}{kind}".lower() if ch.isalnum()) + ".com")
        accounts.append({
            "account_id": f"ACC-{i + 1:0{width['account']}d}",
            "name": name,
            "accountnumber": f"AN-{numbers[i]}",
            "industry": industries[i],
            "city": cities[i],
            "revenue": None if rng.random() < 0.05 else round(rng.lognormvariate(15.0, 1.4), 2),
            "owner": owners[i],
            "primary_contact_id": None,
            "created_at": created,
            "updated_at": ordinary_update(created),
            "updated_by": rng.choice(_UPDATERS),
        })

    # Accounts that are new since the watermark are the newest keys and have no children.
    acc_new = list(range(n_acc - d_acc["new"], n_acc))
    # Lognormal account "size": most accounts have a handful of contacts, a few have ~150.
    weights = [rng.lognormvariate(0.0, 1.2) for _ in range(n_acc)]
    for i in acc_new:
        weights[i] = 0.0
    cum: list[float] = []
    total = 0.0
    for w in weights:
        total += w
        cum.append(total)
    account_index = range(n_acc)

    # ---- source: contacts ------------------------------------------------------------------
    con_new_from = n_con - d_con["new"]
    con_accounts = rng.choices(account_index, cum_weights=cum, k=n_con)
    firsts = rng.choices(words.FIRST_NAMES, k=n_con)
    lasts = rng.choices(words.LAST_NAMES, k=n_con)
    contacts: list[dict[str, Any]] = []
    emails_seen: set[str] = set()
    con_account: list[int | None] = []
    for i in range(n_con):
        a: int | None = con_accounts[i] if rng.random() >= 0.03 else None
        con_account.append(a)
        first, last = firsts[i], lasts[i]
        base = acc_created[a] if a is not None else tl.history_start
        created = base + int((tl.history_end - base) * rng.random())
        email: str | None = None
        if rng.random() >= 0.06:
            domain = domains[a] if a is not None else rng.choice(words.MAIL_DOMAINS)
            local = f"{first}.{last}".lower()
            email = f"{local}@{domain}"
            n = 2
            while email in emails_seen:
                email = f"{local}{n}@{domain}"
                n += 1
            emails_seen.add(email)
        phone = None if rng.random() < 0.08 else f"+1 {rng.choice(words.AREA_CODES)} 555 {rng.randrange(10_000):04d}"
        contacts.append({
            "contact_id": f"CON-{i + 1:0{width['contact']}d}",
            "first_name": first,
            "last_name": last,
            "email": email,
            "phone": phone,
            "account_id": accounts[a]["account_id"] if a is not None else None,
            "created_at": created,
            "updated_at": ordinary_update(created),
            "updated_by": rng.choice(_UPDATERS),
        })

    # Primary contact: the first (oldest key) contact of most accounts.
    primary_of: dict[int, int] = {}
    for ci, a in enumerate(con_account):
        if a is not None and a not in primary_of and ci < con_new_from:
            primary_of[a] = ci
    is_primary: set[int] = set()
    for a, ci in primary_of.items():
        if rng.random() < 0.85:
            accounts[a]["primary_contact_id"] = contacts[ci]["contact_id"]
            is_primary.add(ci)

    # ---- source: opportunities -------------------------------------------------------------
    opp_accounts = rng.choices(account_index, cum_weights=cum, k=n_opp)
    opportunities: list[dict[str, Any]] = []
    for i in range(n_opp):
        a = opp_accounts[i]
        acc = accounts[a]
        roll = rng.random()
        if roll < 0.6:
            status, stage = "open", rng.choice(STAGES)
            close = tl.now + rng.randint(5, 270) * 86_400
        else:
            status, stage = ("won" if roll < 0.85 else "lost"), "Close"
            close = tl.now - rng.randint(5, 900) * 86_400
        created = acc_created[a] + int((tl.history_end - acc_created[a]) * rng.random())
        opportunities.append({
            "opportunity_id": f"OPP-{i + 1:0{width['opportunity']}d}",
            "name": f"{cores[a]} - {rng.randint(2, 400)} {rng.choice(words.PRODUCTS)}",
            "account_id": acc["account_id"],
            "stage": stage,
            "status": status,
            "estimated_value": round(rng.lognormvariate(10.5, 1.1), 2),
            "close_date": fmt(close)[:10],
            "created_at": created,
            "updated_at": ordinary_update(created),
            "updated_by": rng.choice(_UPDATERS),
        })

    has_children = {a for a in con_account if a is not None} | set(opp_accounts)

    # ---- guids and load times --------------------------------------------------------------
    acc_guid = [guid() for _ in range(n_acc)]
    con_guid = [guid() for _ in range(n_con)]
    opp_guid = [guid() for _ in range(n_opp)]
    con_guid_by_key = {c["contact_id"]: g for c, g in zip(contacts, con_guid)}
    acc_guid_by_key = {r["account_id"]: g for r, g in zip(accounts, acc_guid)}

    acc_load = _schedule(rng, n_acc, tl.load_start, tl.accounts_end)
    retry = rng.sample(range(n_acc), max(1, n_acc * DEFECTS["account"]["retry_pct"] // 100))
    for i in retry:
        acc_load[i] = rng.randint(tl.retry_start, tl.retry_end)
    con_load = _schedule(rng, n_con, tl.contacts_start, tl.contacts_end)
    opp_load = _schedule(rng, n_opp, tl.opps_start, tl.opps_end)

    def modified(load: int, updated: int) -> int:
        """Dynamics modifiedon: the load, or the incremental delta that carried a later change.

        Always before the watermark, so a row changed after it is behind until the final
        delta touches it (the planted delta counts hold for every seed).
        """
        if updated <= load:
            return load
        return min(updated + rng.randint(180, 2_700), tl.watermark - 60)

    # ---- target: mirror of the source ------------------------------------------------------
    acc_t: list[dict[str, Any]] = []
    for i, r in enumerate(accounts):
        mod = modified(acc_load[i], r["updated_at"])
        pc = r["primary_contact_id"]
        if pc is not None:
            mod = max(mod, rng.randint(tl.fixup_start, tl.fixup_end))
        acc_t.append({
            "accountid": acc_guid[i],
            "new_legacyid": r["account_id"],
            "name": r["name"],
            "accountnumber": r["accountnumber"],
            "industrycode": _INDUSTRY(r["industry"]),
            "address1_city": r["city"],
            "revenue": r["revenue"],
            "primarycontactid": con_guid_by_key[pc] if pc is not None else None,
            "statecode": 0,
            "createdon": acc_load[i],
            "modifiedon": mod,
        })
    con_t: list[dict[str, Any]] = []
    for i, r in enumerate(contacts):
        con_t.append({
            "contactid": con_guid[i],
            "new_legacyid": r["contact_id"],
            "firstname": r["first_name"],
            "lastname": r["last_name"],
            "fullname": f"{r['first_name']} {r['last_name']}",
            "emailaddress1": r["email"],
            "telephone1": r["phone"],
            "parentcustomerid": acc_guid_by_key[r["account_id"]] if r["account_id"] else None,
            "statecode": 0,
            "createdon": con_load[i],
            "modifiedon": modified(con_load[i], r["updated_at"]),
        })
    opp_t: list[dict[str, Any]] = []
    for i, r in enumerate(opportunities):
        opp_t.append({
            "opportunityid": opp_guid[i],
            "new_legacyid": r["opportunity_id"],
            "name": r["name"],
            "parentaccountid": acc_guid_by_key[r["account_id"]],
            "stepname": _STEP(r["stage"]),
            "statecode": _STATE(r["status"]),
            "estimatedvalue": r["estimated_value"],
            "estimatedclosedate": _CLOSE(r["close_date"]),
            "createdon": opp_load[i],
            "modifiedon": modified(opp_load[i], r["updated_at"]),
        })

    # ---- planting --------------------------------------------------------------------------
    def plant_new(src: list[dict[str, Any]], tgt: list[dict[str, Any]], idx: Sequence[int]) -> None:
        for i in idx:
            created = rng.randint(tl.watermark + 30, tl.freeze_at - 60)
            src[i]["created_at"] = src[i]["updated_at"] = created
            loaded = rng.randint(tl.delta_start, tl.delta_end)
            tgt[i]["createdon"] = tgt[i]["modifiedon"] = loaded

    def plant_changes(
        src: list[dict[str, Any]], tgt: list[dict[str, Any]], idx: Sequence[int], *,
        when: Callable[[str], int], who: Callable[[], str],
        change: Callable[[dict[str, Any], dict[str, Any], bool], None], apply: bool,
    ) -> None:
        """A source change after the watermark; `apply` = the final delta carried it over."""
        for i in idx:
            writer = who()
            src[i]["updated_by"] = writer
            src[i]["updated_at"] = when(writer)
            change(src[i], tgt[i], apply)
            if apply:
                tgt[i]["modifiedon"] = rng.randint(max(tl.delta_start, src[i]["updated_at"]), tl.delta_end)

    def between_watermark_and_freeze(_writer: str) -> int:
        return rng.randint(tl.watermark + 1, tl.freeze_at)

    def after_freeze(writer: str) -> int:
        """ERP Sync writes on its quarter-hour schedule; people at random moments."""
        if writer == "svc_erp_sync":
            runs = (tl.now - tl.freeze_at) // 900 - 1
            return tl.freeze_at + 900 * rng.randint(1, runs) + rng.randint(5, 90)
        return rng.randint(tl.freeze_at + 300, tl.now - 300)

    def updater() -> str:
        return rng.choice(words.OWNERS)

    def breaker() -> str:
        return rng.choice(_FREEZE_BREAKERS)

    def change_account(s: dict[str, Any], t: dict[str, Any], apply: bool) -> None:
        old = s["revenue"]
        new = round((old or rng.lognormvariate(15.0, 1.4)) * rng.choice((1.07, 1.12, 0.91, 1.25)), 2)
        s["revenue"] = new
        if apply:
            t["revenue"] = new

    def change_contact(s: dict[str, Any], t: dict[str, Any], apply: bool) -> None:
        new = f"+1 {rng.choice(words.AREA_CODES)} 555 {rng.randrange(10_000):04d}"
        while new == s["phone"]:
            new = f"+1 {rng.choice(words.AREA_CODES)} 555 {rng.randrange(10_000):04d}"
        s["phone"] = new
        if apply:
            t["telephone1"] = new

    def change_opportunity(s: dict[str, Any], t: dict[str, Any], apply: bool) -> None:
        if s["status"] == "open" and s["stage"] != "Close":
            s["stage"] = STAGES[STAGES.index(s["stage"]) + 1]
        elif s["status"] == "open":
            s["status"] = "won"
        else:
            s["estimated_value"] = round(s["estimated_value"] * 1.08 + 100, 2)
        if apply:
            t["stepname"] = _STEP(s["stage"])
            t["statecode"] = _STATE(s["status"])
            t["estimatedvalue"] = s["estimated_value"]

    def plant_timing(src, tgt, pick: _Picker, d: dict[str, int], change, what: str) -> None:
        plant_changes(src, tgt, pick.take(d["post_freeze"], what=what), when=after_freeze, who=breaker,
                      change=change, apply=False)
        plant_changes(src, tgt, pick.take(d["delta_lag"], what=what), when=between_watermark_and_freeze,
                      who=updater, change=change, apply=False)
        plant_changes(src, tgt, pick.take(d["delta_applied"], what=what), when=between_watermark_and_freeze,
                      who=updater, change=change, apply=True)

    removed: dict[str, set[int]] = {}

    # accounts
    pick = _Picker(rng, n_acc, reserved=acc_new)
    plant_new(accounts, acc_t, acc_new)
    acc_missing = pick.take(d_acc["missing"], lambda i: i not in has_children, what="missing account")
    removed["account"] = set(acc_missing)
    dup_acc = pick.take(2 * d_acc["dup_pairs"], what="duplicate account")
    duplicate_accounts: list[tuple[str, str]] = []
    for a, b in zip(dup_acc[0::2], dup_acc[1::2]):
        accounts[b]["accountnumber"] = acc_t[b]["accountnumber"] = accounts[a]["accountnumber"]
        duplicate_accounts.append((accounts[a]["accountnumber"], acc_guid[b]))
    for i in pick.take(d_acc["null_name"], what="null name"):
        acc_t[i]["name"] = None
    for i in pick.take(d_acc["lost_lookup"], lambda i: accounts[i]["primary_contact_id"] is not None, what="lost lookup"):
        acc_t[i]["primarycontactid"] = None
    plant_timing(accounts, acc_t, pick, d_acc, change_account, "account timing")
    for i in pick.take(d_acc["whitespace"], what="whitespace"):
        accounts[i]["name"] += " "
    for i in pick.take(d_acc["case"], what="case"):
        accounts[i]["city"] = accounts[i]["city"].upper()
    for i in pick.take(d_acc["rounding"], lambda i: accounts[i]["revenue"] is not None
                       and round(accounts[i]["revenue"]) != accounts[i]["revenue"], what="rounding"):
        acc_t[i]["revenue"] = float(round(accounts[i]["revenue"]))

    # contacts
    con_new = list(range(con_new_from, n_con))
    pick = _Picker(rng, n_con, reserved=con_new)
    plant_new(contacts, con_t, con_new)
    removed["contact"] = set(pick.take(d_con["missing"], lambda i: i not in is_primary, what="missing contact"))
    dup_con = pick.take(2 * d_con["dup_pairs"], lambda i: contacts[i]["email"] is not None, what="duplicate contact")
    for a, b in zip(dup_con[0::2], dup_con[1::2]):
        for col, tcol in (("first_name", "firstname"), ("last_name", "lastname"), ("email", "emailaddress1")):
            contacts[b][col] = con_t[b][tcol] = contacts[a][col]
        con_t[b]["fullname"] = con_t[a]["fullname"]
    for i in pick.take(d_con["null_lastname"], what="null lastname"):
        con_t[i]["lastname"] = None
        con_t[i]["fullname"] = con_t[i]["firstname"]
    for i in pick.take(d_con["lost_lookup"], lambda i: contacts[i]["account_id"] is not None, what="lost lookup"):
        con_t[i]["parentcustomerid"] = None
    plant_timing(contacts, con_t, pick, d_con, change_contact, "contact timing")

    def mixed_case(email: str) -> str:
        local, domain = email.split("@", 1)
        return ".".join(p[:1].upper() + p[1:] for p in local.split(".")) + "@" + domain[:1].upper() + domain[1:]

    for i in pick.take(d_con["case"], lambda i: contacts[i]["email"] is not None
                       and mixed_case(contacts[i]["email"]) != contacts[i]["email"], what="case"):
        contacts[i]["email"] = mixed_case(contacts[i]["email"])
    for i in pick.take(d_con["whitespace"], what="whitespace"):
        contacts[i]["last_name"] += " "
    marketing_sources = pick.take(d_con["marketing_dupes"], lambda i: contacts[i]["email"] is not None,
                                  what="marketing duplicate")

    # opportunities
    opp_new = list(range(n_opp - d_opp["new"], n_opp))
    pick = _Picker(rng, n_opp, reserved=opp_new)
    plant_new(opportunities, opp_t, opp_new)
    removed["opportunity"] = set(pick.take(d_opp["missing"], what="missing opportunity"))
    for i in pick.take(d_opp["wrong_parent"], what="wrong parent"):
        while True:
            other = rng.randrange(n_acc)
            if other not in removed["account"] and accounts[other]["account_id"] != opportunities[i]["account_id"]:
                break
        opp_t[i]["parentaccountid"] = acc_guid[other]
    for i in pick.take(d_opp["lost_lookup"], what="lost lookup"):
        opp_t[i]["parentaccountid"] = None
    plant_timing(opportunities, opp_t, pick, d_opp, change_opportunity, "opportunity timing")
    for i in pick.take(d_opp["rounding"], lambda i: round(opportunities[i]["estimated_value"])
                       != opportunities[i]["estimated_value"], what="rounding"):
        opp_t[i]["estimatedvalue"] = float(round(opportunities[i]["estimated_value"]))

    # ---- extras: rows only Dynamics has ----------------------------------------------------
    kept_accounts = [i for i in range(n_acc) if i not in removed["account"]]
    extras: dict[str, list[dict[str, Any]]] = {"account": [], "contact": [], "opportunity": []}
    for n in range(1, d_acc["extra"] + 1):
        t = rng.randint(tl.rehearsal_start, tl.rehearsal_end)
        extras["account"].append({
            "accountid": guid(), "new_legacyid": f"REH3-ACC-{n:03d}",
            "name": f"ZZ Rehearsal 3 smoke test account {n}", "accountnumber": f"TEST-{n:04d}",
            "industrycode": None, "address1_city": "Redmond", "revenue": None, "primarycontactid": None,
            "statecode": 0, "createdon": t, "modifiedon": t,
        })
    for n in range(1, d_con["extra"] + 1):
        t = rng.randint(tl.rehearsal_start, tl.rehearsal_end)
        extras["contact"].append({
            "contactid": guid(), "new_legacyid": f"REH3-CON-{n:03d}", "firstname": "Smoke",
            "lastname": f"Tester {n}", "fullname": f"Smoke Tester {n}",
            "emailaddress1": f"smoke.tester{n}@rehearsal.contoso.test", "telephone1": None,
            "parentcustomerid": extras["account"][0]["accountid"] if extras["account"] else None,
            "statecode": 0, "createdon": t, "modifiedon": t,
        })
    for i in marketing_sources:
        t = rng.randint(tl.marketing_start, tl.marketing_end)
        src = contacts[i]
        extras["contact"].append({
            "contactid": guid(), "new_legacyid": None, "firstname": src["first_name"],
            "lastname": src["last_name"], "fullname": f"{src['first_name']} {src['last_name']}",
            "emailaddress1": src["email"], "telephone1": None, "parentcustomerid": None,
            "statecode": 0, "createdon": t, "modifiedon": t,
        })
    for n in range(1, d_opp["extra"] + 1):
        t = rng.randint(tl.rehearsal_start, tl.rehearsal_end)
        parent = extras["account"][0]["accountid"] if extras["account"] else acc_guid[kept_accounts[0]]
        extras["opportunity"].append({
            "opportunityid": guid(), "new_legacyid": f"REH3-OPP-{n:03d}",
            "name": f"ZZ Rehearsal 3 smoke test opportunity {n}", "parentaccountid": parent,
            "stepname": "1-Qualify", "statecode": 0, "estimatedvalue": 1.0,
            "estimatedclosedate": fmt(tl.now + 30 * 86_400)[:10] + "T00:00:00Z",
            "createdon": t, "modifiedon": t,
        })

    # ---- system tables ---------------------------------------------------------------------
    missing_keys = sorted(accounts[i]["account_id"] for i in removed["account"])
    asyncops = build_async_operations(
        rng, tl,
        duplicate_accounts=duplicate_accounts,
        missing_account_keys=missing_keys,
        account_guids=[acc_guid[i] for i in kept_accounts[:500]],
        opportunity_guids=opp_guid[:500],
        contact_guids=con_guid[:500],
    )
    traces = build_plugin_traces(
        rng, tl,
        duplicate_numbers=[n for n, _ in duplicate_accounts],
        account_guids=[acc_guid[i] for i in kept_accounts[:500]],
    )

    # ---- finalise: timestamps to text, drop missing rows, append extras ---------------------
    source = {"account": accounts, "contact": contacts, "opportunity": opportunities}
    target_full = {"account": acc_t, "contact": con_t, "opportunity": opp_t}
    target: dict[str, list[dict[str, Any]]] = {}
    for name, rows in source.items():
        for r in rows:
            r["created_at"] = fmt(r["created_at"])
            r["updated_at"] = fmt(r["updated_at"])
        gone = removed[name]
        kept = [t for i, t in enumerate(target_full[name]) if i not in gone]
        for t in kept:
            t["createdon"] = fmt(t["createdon"])
            t["modifiedon"] = fmt(t["modifiedon"])
        for t in extras[name]:
            t["createdon"] = fmt(t["createdon"])
            t["modifiedon"] = fmt(t["modifiedon"])
        target[name] = kept + extras[name]
    return _World(
        source=source,
        target=target,
        removed=removed,
        asyncoperations=asyncops,
        plugintracelogs=traces,
    )


def _write_source(path: Path, world: _World, tl: Timeline) -> None:
    """Writes source.db: the legacy CRM as a plain SQLite file (rollback journal, no WAL)."""
    conn = sqlite3.connect(str(path))
    try:
        conn.execute("PRAGMA journal_mode=MEMORY")
        conn.execute("PRAGMA synchronous=OFF")
        with conn:
            for entity in ENTITIES:
                conn.execute(entity.source_ddl)
                cols = entity.source_columns
                sql = (f"INSERT INTO {entity.source_table} ({', '.join(cols)}) "
                       f"VALUES ({', '.join('?' * len(cols))})")
                conn.executemany(sql, ([r[c] for c in cols] for r in world.source[entity.name]))
                for ddl in entity.source_indexes:
                    conn.execute(ddl)
            conn.execute(WATERMARK_DDL)
            conn.executemany(
                "INSERT INTO migration_watermarks VALUES (?, ?, ?, ?, ?)",
                [
                    (e.source_table, tl.iso("watermark"), tl.iso("delta_start"), tl.iso("delta_end"),
                     _applied_by_delta(world, e, tl))
                    for e in ENTITIES
                ],
            )
            conn.execute("ANALYZE")
        conn.execute("PRAGMA journal_mode=DELETE")
    finally:
        conn.close()


def _applied_by_delta(world: _World, entity: DemoEntity, tl: Timeline) -> int:
    """Rows the final delta wrote: target rows whose createdon/modifiedon fall in its run."""
    lo, hi = tl.iso("delta_start"), tl.iso("delta_end")
    return sum(1 for t in world.target[entity.name] if lo <= t["modifiedon"] <= hi)


def _write_dataverse(path: Path, world: _World, tl: Timeline) -> dict[str, CountSnapshot]:
    """Writes dataverse.db through the emulator's storage API; returns the planted snapshots."""
    snapshots: dict[str, CountSnapshot] = {}
    taken = tl.dt("snapshot_at")
    with EmulatorData(path) as data:
        conn = data.connection
        conn.execute("PRAGMA synchronous=OFF")
        for entity in ENTITIES:
            data.define_entity(entity.target)
            data.insert_rows(entity.name, world.target[entity.name])
            # Dataverse indexes an alternate key (the migration key) and the audit columns;
            # without these the emulator would scan 62,000 rows for every keyed lookup.
            table = entity.target.table
            with conn:
                for column in ("new_legacyid", "createdon", "modifiedon", *entity.unique):
                    conn.execute(f'CREATE INDEX IF NOT EXISTS "ix_{entity.name}_{column}" ON "{table}" ("{column}")')
            stale = sum(1 for t in world.target[entity.name] if t["createdon"] <= tl.iso("snapshot_at"))
            data.set_count_snapshot(entity.name, stale, taken)
            snapshots[entity.name] = CountSnapshot(stale, tl.iso("snapshot_at"))
        data.insert_rows("asyncoperation", world.asyncoperations)
        data.insert_rows("plugintracelog", world.plugintracelogs)
        with conn:
            conn.execute("ANALYZE")  # planner statistics, so the emulator's joins pick indexes
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return snapshots


def _remove(paths: Iterable[Path]) -> None:
    for p in paths:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def generate(
    out_dir: str | Path,
    *,
    seed: int = DEFAULT_SEED,
    scale: float = 1.0,
    now: datetime | None = None,
) -> GroundTruth:
    """Writes source.db, dataverse.db and ground_truth.json into `out_dir`; returns the truth.

    Overwrites an earlier world in the folder. Not atomic on its own: `ensure_world` builds
    into a private folder and renames it, which is what concurrent callers should use.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tl = Timeline.at(now)
    world = _build(seed, scale, tl)
    files = {"source": SOURCE_DB, "dataverse": DATAVERSE_DB, "ground_truth": GROUND_TRUTH}
    _remove(out / f"{name}{suffix}" for name in (SOURCE_DB, DATAVERSE_DB, GROUND_TRUTH)
            for suffix in ("", "-wal", "-shm", "-journal"))
    _write_source(out / SOURCE_DB, world, tl)
    snapshots = _write_dataverse(out / DATAVERSE_DB, world, tl)

    parent_keys = {
        name: {t[BY_PK[name]]: t.get("new_legacyid") for t in rows} for name, rows in world.target.items()
    }
    entities = {
        e.name: derive_entity(
            e, world.source[e.name], world.target[e.name], parent_keys,
            watermark=tl.iso("watermark"), freeze_at=tl.iso("freeze_at"), snapshot=snapshots[e.name],
        )
        for e in ENTITIES
    }
    by_name: dict[str, list[dict[str, Any]]] = {}
    for job in world.asyncoperations:
        by_name.setdefault(job["name"], []).append(job)
    truth = GroundTruth(
        generator_version=GENERATOR_VERSION,
        seed=seed,
        scale=scale,
        now=tl.iso("now"),
        freeze_at=tl.iso("freeze_at"),
        watermark=tl.iso("watermark"),
        load_started=tl.iso("load_start"),
        load_finished=tl.iso("delta_end"),
        files=files,
        entities=entities,
        system_jobs={name: summarise_jobs(rows) for name, rows in sorted(by_name.items())},
        integrations={
            iid: summarise_jobs(j for j in world.asyncoperations
                                if j["name"].lower().startswith(like_prefix(pattern).lower()))
            for iid, pattern in INTEGRATION_PATTERNS.items()
        },
        integration_patterns=dict(INTEGRATION_PATTERNS),
        plugin_traces=summarise_plugins(world.plugintracelogs, tl.dt("now")),
    )
    tmp = out / f".{GROUND_TRUTH}.{os.getpid()}.tmp"
    truth.write(tmp)
    os.replace(tmp, out / GROUND_TRUTH)
    return truth



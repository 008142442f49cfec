"""The monthly access-record review (PIPC safety measures: access records are checked at least once a month):
one self-contained HTML page per month, per organisation and per user.

Counts requests, tokens, refusals (401, 403, 429), other errors, personal data found, file downloads, activity
outside working hours (local time, weekdays 09:00-18:00), days with unusual volume, key administration and exports
and purges of the log, the addresses refused most, and whether the hash chain verifies. Times are read in the
organisation's time zone (Asia/Seoul by default).
"""

from __future__ import annotations

import html
import re
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, select

from nexus_k.core.errors import UserError
from serving.security.audit_chain import verify_chain
from serving.storage.db import AuditRecord

WORK_START, WORK_END = 9, 18
_DOWNLOAD = re.compile(r"^/v1/files/[^/]+/content$")
NO_KEY = "(no valid key)"


@dataclass
class Tally:
    """What one organisation (or one of its users) did in the month."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    refused: Counter = field(default_factory=Counter)
    """401, 403 and 429 answers."""
    errors: int = 0
    """Other 4xx and 5xx answers."""
    pii: Counter = field(default_factory=Counter)
    off_hours: int = 0
    downloads: int = 0
    """Files downloaded (``GET /v1/files/{id}/content``, batch results included)."""
    per_day: Counter = field(default_factory=Counter)

    def add(self, row: dict, local: datetime) -> None:
        """Count one audit row (``local``: its time in the report's zone)."""
        self.requests += 1
        self.prompt_tokens += row["prompt_tokens"] or 0
        self.completion_tokens += row["completion_tokens"] or 0
        status = row["status"]
        if status in (401, 403, 429):
            self.refused[status] += 1
        elif status >= 400:
            self.errors += 1
        for kind, n in (row["pii_counts"] or {}).items():
            self.pii[kind] += n
        if local.weekday() >= 5 or not WORK_START <= local.hour < WORK_END:
            self.off_hours += 1
        if status == 200 and row["method"] == "GET" and _DOWNLOAD.match(row["path"]):
            self.downloads += 1
        self.per_day[local.day] += 1


def month_bounds(month: str, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The first instant of ``YYYY-MM`` and of the month after, in ``zone``."""
    try:
        first = datetime.strptime(month, "%Y-%m").replace(tzinfo=zone)
    except ValueError:
        raise UserError(f"--month takes YYYY-MM, got {month!r}") from None
    following = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
    return first, following


def unusual_days(per_day: Counter) -> list[int]:
    """Days whose volume stands out: over three times the median day and over the mean plus three deviations."""
    counts = list(per_day.values())
    if len(counts) < 5:
        return []
    median, mean, spread = statistics.median(counts), statistics.mean(counts), statistics.pstdev(counts)
    return sorted(d for d, n in per_day.items() if n > 3 * median and n > mean + 3 * spread)


@dataclass
class MonthReview:
    """The month's figures."""

    month: str
    zone: str
    orgs: dict[str, Tally]
    users: dict[tuple[str, str], Tally]
    log_actions: list[tuple[str, str, str]]
    """(time, operator, command) of key administration and of exports and purges of the log."""
    refused_ips: Counter
    chain: str


def review(engine: Engine, month: str, zone_name: str = "Asia/Seoul") -> MonthReview:
    """Read the month's audit rows and tally them."""
    zone = ZoneInfo(zone_name)
    start, end = month_bounds(month, zone)
    orgs: dict[str, Tally] = defaultdict(Tally)
    users: dict[tuple[str, str], Tally] = defaultdict(Tally)
    actions, refused_ips = [], Counter()
    columns = [AuditRecord.created_at, AuditRecord.org_name, AuditRecord.end_user, AuditRecord.method,
               AuditRecord.path, AuditRecord.status, AuditRecord.prompt_tokens, AuditRecord.completion_tokens,
               AuditRecord.pii_counts, AuditRecord.client_ip]
    query = select(*columns).where(AuditRecord.created_at >= start.astimezone(UTC),
                                   AuditRecord.created_at < end.astimezone(UTC)).order_by(AuditRecord.id)
    with engine.connect() as conn:
        for row in conn.execution_options(stream_results=True, yield_per=2000).execute(query).mappings():
            when = row["created_at"]
            local = (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(zone)
            if row["method"] == "CLI":
                actions.append((local.strftime("%Y-%m-%d %H:%M"), row["end_user"] or "-", row["path"]))
                continue
            org = row["org_name"] or NO_KEY
            orgs[org].add(row, local)
            users[(org, row["end_user"] or "-")].add(row, local)
            if row["status"] in (401, 403) and row["client_ip"]:
                refused_ips[row["client_ip"]] += 1
    report = verify_chain(engine)
    chain = (f"intact ({report.rows} rows, head row {report.last_id})" if report.ok
             else f"BROKEN at row {report.bad_id}: {report.problem}")
    return MonthReview(month, zone_name, dict(orgs), dict(users), actions, refused_ips, chain)


def _cell(value: object) -> str:
    return f"<td>{html.escape(str(value))}</td>"


def _row(name: str, tally: Tally, extra: str = "") -> str:
    pii = ", ".join(f"{k} {n}" for k, n in sorted(tally.pii.items()) if n) or "-"
    unusual = ", ".join(str(d) for d in unusual_days(tally.per_day)) or "-"
    cells = [name, f"{tally.requests:,}", f"{tally.prompt_tokens + tally.completion_tokens:,}",
             tally.refused[401], tally.refused[403], tally.refused[429], tally.errors, pii,
             f"{tally.off_hours:,}", tally.downloads, unusual]
    return "<tr>" + extra + "".join(_cell(c) for c in cells) + "</tr>"


def _bars(per_day: Counter, days: int) -> str:
    """An inline SVG bar chart of requests per day."""
    top = max(per_day.values(), default=0) or 1
    bars = []
    for d in range(1, days + 1):
        h = 60 * per_day.get(d, 0) / top
        bars.append(f'<rect x="{(d - 1) * 12}" y="{60 - h:.1f}" width="10" height="{h:.1f}" fill="#3b6fd4">'
                    f"<title>{d}: {per_day.get(d, 0)}</title></rect>")
    return f'<svg width="{days * 12}" height="62" role="img" aria-label="requests per day">{"".join(bars)}</svg>'


HEAD = ("<th>requests</th><th>tokens</th><th>401</th><th>403</th><th>429</th><th>other errors</th>"
        "<th>PII found</th><th>off hours</th><th>file downloads</th><th>unusual days</th>")


def render(data: MonthReview) -> str:
    """The review as one HTML page (no scripts, no external files)."""
    start, end = month_bounds(data.month, ZoneInfo(data.zone))
    days = (end - start).days
    total: Counter = Counter()
    for tally in data.orgs.values():
        total.update(tally.per_day)
    parts = [
        "<!doctype html><html lang='ko'><head><meta charset='utf-8'>",
        f"<title>Nexus-K 접속기록 점검 {html.escape(data.month)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
        ".broken{color:#b00;font-weight:bold}</style></head><body>",
        f"<h1>접속기록 월간 점검 (access-record review) {html.escape(data.month)}</h1>",
        f"<p>Time zone {html.escape(data.zone)}; working hours weekdays {WORK_START}:00-{WORK_END}:00. "
        f"Hash chain: <span class='{'broken' if 'BROKEN' in data.chain else ''}'>{html.escape(data.chain)}</span>"
        f"</p>",
        f"<h2>Requests per day</h2>{_bars(total, days)}",
        f"<h2>Per organisation</h2><table><tr><th>organisation</th>{HEAD}</tr>",
        *(_row(org, tally) for org, tally in sorted(data.orgs.items())),
        "</table>",
        f"<h2>Per user</h2><table><tr><th>organisation</th><th>user</th>{HEAD}</tr>",
        *(_row(user, tally, _cell(org)) for (org, user), tally in sorted(data.users.items())),
        "</table>",
        "<h2>Administration: keys, limits, PII guard, exports and purges of the log</h2>"
        "<table><tr><th>time</th><th>operator</th><th>command</th></tr>",
        *("<tr>" + "".join(_cell(c) for c in action) + "</tr>" for action in data.log_actions),
        "</table>",
        "<h2>Addresses refused most (401/403)</h2><table><tr><th>client IP</th><th>refusals</th></tr>",
        *("<tr>" + _cell(ip) + _cell(n) + "</tr>" for ip, n in data.refused_ips.most_common(20)),
        "</table>",
        "<h2>Sign-off</h2><p>Reviewed by: ____________________ &nbsp; Date: ____________ &nbsp; "
        "Findings: ______________________________</p>",
        f"<p><small>Generated {date.today().isoformat()} by nexus-k audit report.</small></p></body></html>",
    ]
    return "\n".join(parts)

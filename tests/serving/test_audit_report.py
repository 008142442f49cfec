"""``nexus-k audit report``: the monthly review counts per organisation and user, in local time."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from typer.testing import CliRunner

from nexus_k.cli import app
from serving.security.audit import AuditEntry
from serving.security.audit_admin import export
from serving.security.audit_report import review
from serving.security.recorder import RecordWriter
from serving.storage.db import get_engine

KST = ZoneInfo("Asia/Seoul")


def _at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=KST).astimezone(UTC)


def _rows(url: str, rows: list[tuple[datetime, str | None, str | None, int, dict | None, str | None]],
          method: str = "POST", path: str = "/v1/chat/completions") -> None:
    writer = RecordWriter(get_engine(url))

    async def main() -> None:
        for i, (when, org, user, status, pii, ip) in enumerate(rows):
            await writer.record(AuditEntry(request_id=f"r{i}", method=method, path=path,
                                           status=status, latency_ms=1.0, org_name=org, end_user=user,
                                           prompt_tokens=10 if status == 200 else 0,
                                           completion_tokens=5 if status == 200 else 0, pii_counts=pii,
                                           client_ip=ip, created_at=when), None)

    asyncio.run(main())


def test_monthly_review(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    rows = [(_at(d, 10), "a", "u1", 200, None, "10.0.0.1") for d in range(2, 12)]  # Mon 2 March on, 10:00 KST
    rows += [(_at(12, 11, m), "a", "u2", 200, None, "10.0.0.2") for m in range(40)]  # a burst on the 12th
    rows += [(_at(3, 23), "a", "u1", 429, None, "10.0.0.1")]  # late at night
    rows += [(_at(7, 14), "b", "u3", 200, {"phone": 2, "rrn": 1}, "10.0.0.3")]  # a Saturday
    rows += [(_at(5, 15), None, None, 401, None, "203.0.113.5")] * 3
    rows += [(datetime(2026, 2, 28, 23, 30, tzinfo=UTC), "b", "u3", 200, None, None)]  # 1 March 08:30 KST
    rows += [(datetime(2026, 2, 28, 14, 0, tzinfo=UTC), "b", "u3", 200, None, None)]  # still February in Seoul
    _rows(url, rows)
    _rows(url, [(_at(9, 10), "b", "u3", 200, None, None)], method="GET", path="/v1/files/file-abc/content")
    export(get_engine(url), datetime(2026, 3, 1).date(), datetime(2026, 3, 31).date(), "csv", tmp_path / "x.csv")

    data = review(get_engine(url), "2026-03")
    a, b = data.orgs["a"], data.orgs["b"]
    # Off hours: the night of the 3rd and 7-8 March, a weekend.
    assert (a.requests, a.refused[429], a.off_hours, a.prompt_tokens + a.completion_tokens) == (51, 1, 3, 50 * 15)
    assert (b.requests, b.off_hours, dict(b.pii), b.downloads) == (3, 2, {"phone": 2, "rrn": 1}, 1)
    assert data.orgs["(no valid key)"].refused[401] == 3 and data.refused_ips["203.0.113.5"] == 3
    assert data.users[("a", "u2")].requests == 40
    assert "intact" in data.chain

    out = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["audit", "report", "--month", "2026-03", "--out", str(out),
                                      "--database-url", url])
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    assert re.search(r"<tr><td>a</td><td>51</td><td>750</td><td>0</td><td>0</td><td>1</td><td>0</td><td>-</td>"
                     r"<td>3</td><td>0</td><td>12</td></tr>", page), page  # the 12th stands out
    assert "phone 2, rrn 1" in page and "203.0.113.5" in page
    now = datetime.now(KST).strftime("%Y-%m")  # the export was done now: it shows in this month's review
    assert any("audit export --from 2026-03-01" in action[2] for action in review(get_engine(url), now).log_actions)
    assert "<script" not in page


def test_report_escapes_what_users_wrote(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    _rows(url, [(_at(2, 10), "a", "<script>alert(1)</script>", 200, None, None)])
    out = tmp_path / "r.html"
    CliRunner().invoke(app, ["audit", "report", "--month", "2026-03", "--out", str(out), "--database-url", url])
    assert "<script>" not in out.read_text(encoding="utf-8")

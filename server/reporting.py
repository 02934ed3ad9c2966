"""Reports for the user from the telemetry store: the text `opportune demo` prints and the editors'
`opportune/report` request shows.  The analysis itself lives in ``telemetry``."""

from __future__ import annotations

from pathlib import Path

from opportune.server.protocol import ReportResult
from opportune.server.session import Session


def store_report(paths: list[Path], since: str | None = None) -> str:
    from opportune.telemetry import report

    return report.render_text(paths, since=since)


def session_report(session: Session, since: str) -> ReportResult:
    """The ``opportune/report`` answer; ValueError for a bad ``since``."""
    from opportune.telemetry import report

    session.store.flush()
    db = session.settings.telemetry.db
    paths = [Path(db)] if db else []
    if not paths:
        from opportune.telemetry.store import default_db_path

        paths = [default_db_path()]
    data = report.load_report(paths, since=since)  # read the store once for both forms
    return ReportResult(text=report.render(data), data=data)

"""What respawn knows of Runner jobs: their descriptions, fetched once, feed job globs."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Execution, Job


@dataclass(frozen=True)
class JobToFetch:
    account: str
    job_id: str


def jobs_to_fetch(session: Session, limit: int) -> list[JobToFetch]:
    """Jobs with executions on record whose own record respawn has not fetched yet."""
    known = select(Job.job_id)
    rows = session.execute(
        select(Execution.account_alias, Execution.job_id)
        .where(Execution.job_id != "", Execution.job_id.not_in(known))
        .group_by(Execution.account_alias, Execution.job_id)
        .limit(limit)
    )
    return [JobToFetch(account, job_id) for account, job_id in rows]


def record_job(
    session: Session,
    job: JobToFetch,
    description: str | None,
    error: str | None,
    now: dt.datetime,
) -> None:
    """Store what fetching a job gave: its description, or why it could not be fetched."""
    session.merge(
        Job(
            job_id=job.job_id,
            account_alias=job.account,
            description=description,
            fetched_at=now,
            fetch_error=error[:255] if error else None,
        )
    )

"""Recent history per key (`app.core.history`): each key gets its own latest rows, however
many more another key has, in statements of bounded size; and a batch's decisions add their
sightings as a fresh read would find them."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.core import history
from app.core.decision_inputs import BatchInputs
from app.core.history import sightings_of
from app.core.ingest import ingest_and_decide, parse_deliveries
from app.db import transaction
from app.models import Decision, Execution, FailureSignature
from app.policy import DecisionInput, Sighting, Signature, SignatureBreaker, parse_policy
from tests.feed import failing_run_events
from tests.policy.helpers import make_input

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
BREAKER = SignatureBreaker()
SKIP_ALL = parse_policy("version: 1\ndefaults: {action: skip}\n", "test.yaml")
KEYS = itertools.count(1)


def ago(minutes: float) -> dt.datetime:
    return NOW - dt.timedelta(minutes=minutes)


@pytest.fixture
def execution_pk(sessions: sessionmaker[Session]) -> int:
    feed = failing_run_events(int(NOW.timestamp() * 1000) - 3_600_000, ("web2",), "h", "exec-h")
    with transaction(sessions) as session:
        ingest_and_decide(session, parse_deliveries(feed, None, 500), NOW, SKIP_ALL, False)
        return session.scalars(select(Execution.id)).one()


def decided(sessions: sessionmaker[Session], pk: int, signature: str, at: dt.datetime) -> None:
    with transaction(sessions) as session:
        session.add(
            Decision(
                execution_pk=pk, run_index=0, decision_key=f"test:{next(KEYS)}",
                origin="policy", action="skip", hosts=[], excluded_hosts=[], due_at=at,
                backoff_seconds=0.0, rule="default", reason_code="restart", reason="test",
                policy_version="test", created_at=at, signature=signature,
            )
        )  # fmt: skip


def test_each_signature_keeps_its_own_latest_sightings(
    sessions: sessionmaker[Session], execution_pk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With two sightings kept per signature, a signature seen five times lately does not
    crowd out another's older ones; keys and the per-key statements go a few at a time."""
    monkeypatch.setattr(history, "MAX_SIGHTINGS", 2)
    monkeypatch.setattr(history, "IN_CHUNK", 3)
    monkeypatch.setattr(history, "UNION_TERMS", 2)
    for minutes in (1, 2, 3, 4, 5):
        decided(sessions, execution_pk, "busy", ago(minutes))
    decided(sessions, execution_pk, "quiet", ago(20))
    decided(sessions, execution_pk, "quiet", ago(21))
    decided(sessions, execution_pk, "quiet", ago(22))
    keys = ["busy", "quiet", "none", "k4", "k5"]

    with sessions() as session:
        found = sightings_of(session, BREAKER, keys, NOW)

    assert {key: [s.at for s in found[key]] for key in keys} == {
        "busy": [ago(2), ago(1)],
        "quiet": [ago(21), ago(20)],
        "none": [],
        "k4": [],
        "k5": [],
    }


def test_sightings_leave_out_what_came_before_the_breaker_was_closed(
    sessions: sessionmaker[Session], execution_pk: int
) -> None:
    decided(sessions, execution_pk, "sig", ago(5))
    decided(sessions, execution_pk, "sig", ago(1))
    with transaction(sessions) as session:
        session.add(
            FailureSignature(
                key="sig", failure_class="unknown", text="x", first_seen_at=ago(9),
                last_seen_at=ago(1), closed_at=ago(3),
            )
        )  # fmt: skip

    with sessions() as session:
        found = sightings_of(session, BREAKER, ["sig"], NOW)

    assert [s.at for s in found["sig"]] == [ago(1)]


def decided_on(key: str, sighting: Sighting) -> DecisionInput:
    """The input of a decision with signature `key`, whose own sighting is `sighting`."""
    return make_input(
        now=sighting.at,
        signature=Signature(key, "task_failed", "x"),
        signature_sightings=(sighting,),
    )


def test_a_batch_adds_its_decisions_sightings_unless_the_breaker_was_closed_since() -> None:
    batch = BatchInputs({}, {}, (), sightings={"open": [], "closed": []})
    batch.closed = {"closed": NOW}

    for key in ("open", "closed", "unread"):
        batch.decided(decided_on(key, Sighting(NOW, "exec-1", "job-1")))
    batch.decided(decided_on("closed", Sighting(NOW + dt.timedelta(seconds=1), "exec-2", "job-1")))

    assert batch.sightings == {
        "open": [Sighting(NOW, "exec-1", "job-1")],
        "closed": [Sighting(NOW + dt.timedelta(seconds=1), "exec-2", "job-1")],
    }

"""No body makes the receiver answer 500, and a rejected body stores nothing."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from app import create_app
from app.extensions import get_runtime
from app.models import Event
from tests.conftest import CALLBACK_TOKEN
from tests.helpers import transaction

URL = f"/callbacks/{CALLBACK_TOKEN}"

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
field_values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=5), scalars, max_size=3),
)
KEYS = [
    "execution_id",
    "job_id",
    "account_alias",
    "status",
    "timers",
    "start",
    "end",
    "failed_hosts",
    "repository_log",
    "is_vpn_established",
    "id",
    "event_type",
    "timestamp",
    "message",
    "notifications",
]
near_valid = st.fixed_dictionaries(
    {"execution_id": st.one_of(st.text(min_size=1, max_size=10), field_values)},
    optional={key: field_values for key in KEYS[1:]}
    | {
        "status": st.sampled_from(["failure", "RUNNING", "init_failure", "x", ""]),
        "timers": st.lists(
            st.fixed_dictionaries({}, optional={"start": field_values, "end": field_values}),
            max_size=3,
        ),
    },
)


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Any:
    folder = tmp_path_factory.mktemp("fuzz")
    level = logging.getLogger().level
    shutil.copy(sqlite_template, folder / "fuzz.db")
    (folder / "policy.yaml").write_text("version: 1\n")
    app = create_app(
        {
            "database_url": f"sqlite:///{folder / 'fuzz.db'}",
            "callback_tokens": (CALLBACK_TOKEN,),
            "testing": True,
            "dispatcher": "off",
            "policy_file": str(folder / "policy.yaml"),
            "log_level": "CRITICAL",
            "callback_ack": "processed",
            "spool_dir": str(folder / "spool"),
        }
    )
    yield app
    get_runtime(app).close()
    logging.getLogger().setLevel(level)  # the app set the process's root to CRITICAL


def stored(app: Any) -> int:
    with transaction(app) as session:
        return session.scalar(select(func.count()).select_from(Event)) or 0


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(body=st.one_of(json_values, near_valid, st.lists(near_valid, max_size=3)))
def test_any_json_body_gets_a_clear_answer(fuzz_app: Any, body: Any) -> None:
    before = stored(fuzz_app)

    response = fuzz_app.test_client().post(
        URL, data=json.dumps(body), content_type="application/json"
    )

    assert response.status_code in (202, 400, 413, 422), response.get_data(as_text=True)
    answer = response.get_json()
    if response.status_code == 202:
        assert stored(fuzz_app) == before + answer["accepted"]
    else:
        assert set(answer) == {"error", "message", "fields"}
        assert stored(fuzz_app) == before


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(raw=st.binary(max_size=200))
def test_any_bytes_get_a_clear_answer(fuzz_app: Any, raw: bytes) -> None:
    response = fuzz_app.test_client().post(URL, data=raw, content_type="application/json")

    assert response.status_code in (202, 400, 422)

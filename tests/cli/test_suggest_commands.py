"""`respawn policy suggest` and `respawn insights rebuild` over a history with planted patterns
(bench/plant.py): each planted pattern gets its suggestion, noise below the threshold none."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result
from sqlalchemy.engine import Engine

from app.cli import main
from app.policy import parse_policy
from bench.plant import PLANT_POLICY, Planted, bench_patterns, plant, planted_patterns
from tests.conftest import CALLBACK_TOKEN
from tests.helpers import cli_env, counted_statements


@pytest.fixture
def env(database_url: str, policy_file: Path) -> dict[str, str]:
    policy_file.write_text(PLANT_POLICY)
    env = cli_env(database_url, policy_file, RESPAWN_DISPATCHER="off", RESPAWN_LOG_LEVEL="WARNING")
    return env | {"RESPAWN_CALLBACK_TOKENS": CALLBACK_TOKEN}


@pytest.fixture
def planted(database_url: str) -> Planted:
    return plant(database_url, planted_patterns(), seed=7)


def respawn(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def suggested_rules(output: str) -> list[dict[str, object]]:
    snippet = output.split("\n# backtest")[0]
    rules = (yaml.safe_load(snippet) or {}).get("rules") or []
    assert isinstance(rules, list)
    return rules


def test_suggest_finds_each_planted_pattern_and_nothing_for_noise(
    env: dict[str, str], planted: Planted
) -> None:
    result = respawn(env, "policy", "suggest", "--since", "30d", "--min-samples", "10")

    assert result.exit_code == 0, result.output
    rules = suggested_rules(result.output)
    by_signature = {str(rule["name"]).rsplit("-", 1)[1]: rule for rule in rules}
    keys = planted.keys
    assert set(by_signature) == {keys[name][:8] for name in ("never", "second-try", "long-wait")}
    assert by_signature[keys["never"][:8]]["action"] == "skip"
    assert by_signature[keys["second-try"][:8]]["max_restarts"] == 4
    assert by_signature[keys["long-wait"][:8]]["backoff"] == {"initial": "30m", "max": "2h"}
    assert "0 of " in result.output
    assert "95% Wilson interval" in result.output
    # The snippet pastes into the policy and loads.
    document = yaml.safe_load(PLANT_POLICY)
    document["rules"] = rules
    parse_policy(yaml.safe_dump(document), "pasted.yaml")
    # The backtest: skipping what never recovers saves restarts and loses no recovery.
    assert "# restarts saved: " in result.output
    lost = next(line for line in result.output.splitlines() if "recoveries lost" in line)
    assert lost.split()[-2] == "0"


def test_nothing_is_suggested_below_min_samples(env: dict[str, str], planted: Planted) -> None:
    result = respawn(env, "policy", "suggest", "--min-samples", "1000")

    assert result.exit_code == 0, result.output
    assert suggested_rules(result.output) == []
    assert "no suggestions" in result.output


def test_suggestions_cost_the_same_statements_for_many_more_signatures(
    env: dict[str, str], planted: Planted, database_url: str
) -> None:
    with counted_statements(Engine) as few:
        assert respawn(env, "policy", "suggest", "--no-backtest").exit_code == 0

    plant(database_url, bench_patterns(random.Random(3)), seed=8)  # 56 more signatures
    with counted_statements(Engine) as many:
        result = respawn(env, "policy", "suggest", "--no-backtest")

    assert result.exit_code == 0, result.output
    assert len(suggested_rules(result.output)) > len(planted.keys)
    assert len(many) == len(few)


def test_rebuild_reports_what_it_counted(env: dict[str, str], planted: Planted) -> None:
    result = respawn(env, "insights", "rebuild")

    assert result.exit_code == 0, result.output
    assert f"insights rebuilt: {planted.decisions} failures" in result.output


def test_suggest_refuses_a_bad_option(env: dict[str, str]) -> None:
    result = respawn(env, "policy", "suggest", "--min-samples", "0")

    assert result.exit_code == 2

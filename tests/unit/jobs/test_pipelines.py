"""Stage configuration validation and the pipeline's lock semantics, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from jobs import pipelines
from jobs.audit import verify
from jobs.db import session_scope
from jobs.db.models import PIPELINE_STAGES, AuditEntry
from jobs.permissions import Actor, Forbidden, Role
from jobs.pipelines import (
    STAGE_FIELDS,
    InvalidConfig,
    NodeLocked,
    StaleConfig,
    config_as_text,
    config_problems,
    lock_node,
    node_view,
    parse_form,
    pipeline_view,
    record_run,
    unlock_node,
    update_node_config,
    validate_config,
)
from jobs.projects import create_project
from jobs.users import Conflict, InvalidInput, actor_for, create_user, grant_role, revoke_role

pytestmark = pytest.mark.unit

VALID = {
    "ingestion": {
        "source_uri": "s3://raw/credit",
        "schedule": "15 * * * *",
        "format": "csv",
        "max_lag_hours": 12,
    },
    "preparation": {"null_policy": "impute", "dedupe_keys": ["loan_id"], "min_rows": 100},
    "features": {
        "feature_set": "credit-v1",
        "numeric_features": ["income"],
        "categorical_features": ["purpose"],
    },
    "training_registry": {
        "model": "credit-default",
        "estimator": "linear",
        "schedule": "0 3 * * mon",
        "test_size": 0.2,
    },
    "deployment": {
        "target_environment": "prod",
        "strategy": "canary",
        "canary_percent": 10,
        "alias": "champion",
    },
    "inference": {"mode": "batch", "schedule": "*/30 * * * *", "max_latency_ms": 250},
    "monitoring": {"window": "day", "drift_policy": "psi", "drift_threshold": 0.2, "label_horizon_days": 30},
    "feedback": {"label_source_uri": "/data/labels", "join_key": "loan_id", "delay_days": 7},
}
PASSWORD = "pipeline-tests-pass"


# --------------------------------------------------------------------------- validation (no database)


def test_every_stage_has_fields_and_a_valid_example() -> None:
    assert set(STAGE_FIELDS) == set(PIPELINE_STAGES) == set(VALID)
    for stage, config in VALID.items():
        assert validate_config(stage, config) == {
            spec.name: (float(config[spec.name]) if spec.kind == "float" else config[spec.name])
            for spec in STAGE_FIELDS[stage]
            if spec.name in config
        }


@pytest.mark.parametrize(
    ("stage", "config", "field", "message"),
    [
        ("ingestion", {"schedule": "0 * * * *"}, "source_uri", "is required"),
        (
            "ingestion",
            {**VALID["ingestion"], "schedule": "61 * * * *"},
            "schedule",
            "higher than the maximum",
        ),
        ("ingestion", {**VALID["ingestion"], "schedule": "@hourly"}, "schedule", "five fields"),
        (
            "ingestion",
            {**VALID["ingestion"], "source_uri": "javascript:alert(1)//x://"},
            "source_uri",
            "not supported",
        ),
        ("ingestion", {**VALID["ingestion"], "source_uri": "https://u:pw@host/x"}, "source_uri", "password"),
        ("ingestion", {**VALID["ingestion"], "source_uri": "../../etc"}, "source_uri", "'..'"),
        ("ingestion", {**VALID["ingestion"], "max_lag_hours": True}, "max_lag_hours", "must be a number"),
        ("ingestion", {**VALID["ingestion"], "max_lag_hours": 1.5}, "max_lag_hours", "whole number"),
        ("ingestion", {**VALID["ingestion"], "max_lag_hours": 0}, "max_lag_hours", "at least 1"),
        ("ingestion", {**VALID["ingestion"], "format": "xml"}, "format", "one of parquet, csv, json"),
        ("ingestion", {**VALID["ingestion"], "owner": "me"}, "owner", "is not a setting"),
        ("preparation", {"null_policy": "keep", "dedupe_keys": ["a", "a"]}, "dedupe_keys", "twice"),
        ("preparation", {"null_policy": "keep", "dedupe_keys": "a,b"}, "dedupe_keys", "list of column names"),
        ("features", {"feature_set": "a/b"}, "feature_set", "letters"),
        (
            "features",
            {"feature_set": "f", "numeric_features": ["x"], "categorical_features": ["x"]},
            "categorical_features",
            "cannot be numeric and categorical",
        ),
        (
            "training_registry",
            {**VALID["training_registry"], "test_size": 1.0},
            "test_size",
            "strictly between",
        ),
        (
            "training_registry",
            {**VALID["training_registry"], "test_size": float("nan")},
            "test_size",
            "finite",
        ),
        ("deployment", {**VALID["deployment"], "alias": "latest"}, "alias", "registry alias"),
        ("deployment", {"target_environment": "prod", "strategy": "canary"}, "canary_percent", "required"),
        ("deployment", {**VALID["deployment"], "strategy": "direct"}, "canary_percent", "only applies"),
        (
            "deployment",
            {**VALID["deployment"], "target_environment": "qa"},
            "target_environment",
            "dev, staging",
        ),
        ("inference", {"mode": "batch"}, "schedule", "required in batch mode"),
        ("inference", {"mode": "online", "schedule": "0 * * * *"}, "schedule", "only applies"),
        (
            "monitoring",
            {**VALID["monitoring"], "drift_policy": "default"},
            "drift_threshold",
            "own thresholds",
        ),
        (
            "monitoring",
            {**VALID["monitoring"], "drift_policy": "ks", "drift_threshold": 2},
            "drift_threshold",
            "p-value",
        ),
        (
            "monitoring",
            {**VALID["monitoring"], "label_horizon_days": 400},
            "label_horizon_days",
            "at most 365",
        ),
        ("feedback", {**VALID["feedback"], "join_key": "1bad"}, "join_key", "column name"),
    ],
)
def test_invalid_configurations_name_the_field_and_the_problem(
    stage: str, config: dict, field: str, message: str
) -> None:
    with pytest.raises(InvalidConfig) as refused:
        validate_config(stage, config)
    assert field in refused.value.problems
    assert message in refused.value.problems[field]
    assert field in str(refused.value)


def test_a_non_object_and_an_unknown_stage_are_refused() -> None:
    assert config_problems("ingestion", ["not", "an", "object"]) == {
        "*": "the configuration must be a JSON object"
    }
    with pytest.raises(InvalidInput, match="unknown pipeline stage"):
        validate_config("training", {})


def test_form_text_is_parsed_to_typed_values() -> None:
    parsed = parse_form(
        "preparation", {"null_policy": "drop_rows", "dedupe_keys": " loan_id, day ,, ", "min_rows": " 50 "}
    )
    assert parsed == {"null_policy": "drop_rows", "dedupe_keys": ["loan_id", "day"], "min_rows": 50}
    assert parse_form(
        "training_registry", {"model": "m", "estimator": "linear", "test_size": "0.25", "schedule": ""}
    ) == {
        "model": "m",
        "estimator": "linear",
        "test_size": 0.25,
    }
    with pytest.raises(InvalidConfig) as refused:
        parse_form("preparation", {"null_policy": "keep", "min_rows": "ten", "colour": "red"})
    assert refused.value.problems == {
        "min_rows": "must be a whole number",
        "colour": "is not a setting of the preparation stage",
    }


@settings(max_examples=60, deadline=None)
@given(stage=st.sampled_from(sorted(VALID)), data=st.data())
def test_text_round_trip_keeps_a_valid_configuration(stage: str, data: st.DataObject) -> None:
    # Any subset of a valid example that still validates survives config -> form text -> config.
    keys = data.draw(st.lists(st.sampled_from(sorted(VALID[stage])), unique=True))
    subset = {key: VALID[stage][key] for key in keys}
    if config_problems(stage, subset):
        return
    assert parse_form(stage, config_as_text(stage, subset)) == validate_config(stage, subset)


# --------------------------------------------------------------------------- on the database


@dataclass
class Team:
    factory: sessionmaker[Session]
    admin: Actor
    data: Actor
    production: Actor
    sponsor: Actor

    def session(self, *, write: bool = True):
        return session_scope(self.factory, write=write)


@pytest.fixture
def team(migrated_session_factory: sessionmaker[Session]) -> Iterator[Team]:
    factory = migrated_session_factory
    with session_scope(factory, write=True) as session:
        root = create_user(session, None, "root", PASSWORD, is_admin=True)
        admin = actor_for(session, root.id)
        create_project(session, admin, "credit-risk", "Credit risk")
        ids = {}
        for name, role in (
            ("dara", Role.DATA_TEAM),
            ("pat", Role.PRODUCTION_TEAM),
            ("sam", Role.MODEL_SPONSOR),
        ):
            user = create_user(session, admin, name, PASSWORD)
            grant_role(session, admin, user, "credit-risk", role)
            ids[name] = user.id
    with session_scope(factory) as session:
        actors = {name: actor_for(session, user_id) for name, user_id in ids.items()}
        admin = actor_for(session, root.id)
    yield Team(factory, admin, actors["dara"], actors["pat"], actors["sam"])


def _config(team: Team, stage: str) -> dict:
    with team.session(write=False) as session:
        return node_view(session, team.admin, "credit-risk", stage).config


def _audit(team: Team, action: str) -> list[dict]:
    with team.session(write=False) as session:
        rows = session.scalars(
            select(AuditEntry.details).where(AuditEntry.action == action).order_by(AuditEntry.seq)
        )
        return [json.loads(details) for details in rows]


def test_view_lists_the_eight_stages_for_those_who_may_see_them(team: Team) -> None:
    with team.session(write=False) as session:
        nodes = pipeline_view(session, team.production, "credit-risk")
        assert [n.stage for n in nodes] == list(PIPELINE_STAGES)
        assert all(not n.configured and n.last_status == "never_run" and not n.locked for n in nodes)
        with pytest.raises(Forbidden):
            pipeline_view(session, team.sponsor, "credit-risk")
        with pytest.raises(Conflict):
            pipeline_view(session, team.admin, "nope")


def test_data_team_edits_and_the_audit_keeps_before_and_after(team: Team) -> None:
    with team.session() as session:
        update_node_config(session, team.data, "credit-risk", "ingestion", VALID["ingestion"])
    changed = {**VALID["ingestion"], "schedule": "0 0 * * *"}
    with team.session() as session:
        update_node_config(session, team.data, "credit-risk", "ingestion", changed)
        update_node_config(session, team.data, "credit-risk", "ingestion", changed)  # same: no entry
    entries = _audit(team, "pipeline.node.update")
    assert [(e["before"], e["after"]) for e in entries] == [
        ({}, VALID["ingestion"]),
        (VALID["ingestion"], changed),
    ]
    assert _config(team, "ingestion") == changed
    with team.session(write=False) as session:
        assert verify(session).ok


def test_roles_without_edit_pipeline_are_refused_and_nothing_changes(team: Team) -> None:
    for actor in (team.production, team.sponsor):
        with team.session() as session, pytest.raises(Forbidden):
            update_node_config(session, actor, "credit-risk", "monitoring", VALID["monitoring"])
    assert _config(team, "monitoring") == {}
    assert _audit(team, "pipeline.node.update") == []


def test_invalid_configuration_is_refused_before_anything_is_written(team: Team) -> None:
    with team.session() as session, pytest.raises(InvalidConfig):
        update_node_config(session, team.data, "credit-risk", "monitoring", {"window": "fortnight"})
    assert _config(team, "monitoring") == {}


def test_a_locked_node_refuses_every_edit_until_production_unlocks_it(team: Team) -> None:
    with team.session() as session, pytest.raises(Forbidden):
        lock_node(session, team.data, "credit-risk", "deployment")
    with team.session() as session:
        lock_node(session, team.production, "credit-risk", "deployment", reason="change freeze")
    for actor in (team.data, team.admin):
        with team.session() as session, pytest.raises(NodeLocked, match="locked by pat"):
            update_node_config(session, actor, "credit-risk", "deployment", VALID["deployment"])
    with team.session() as session, pytest.raises(Conflict, match="already locked"):
        lock_node(session, team.admin, "credit-risk", "deployment")
    with team.session() as session, pytest.raises(Forbidden):
        unlock_node(session, team.data, "credit-risk", "deployment")
    with team.session(write=False) as session:
        view = node_view(session, team.data, "credit-risk", "deployment")
        assert view.locked and view.locked_by == "pat"
    # Runs are not configuration: a locked stage still records them.
    with team.session() as session:
        record_run(session, "credit-risk", "deployment", "succeeded")
    with team.session() as session:
        unlock_node(session, team.production, "credit-risk", "deployment")
    with team.session() as session, pytest.raises(Conflict, match="not locked"):
        unlock_node(session, team.production, "credit-risk", "deployment")
    with team.session() as session:
        update_node_config(session, team.data, "credit-risk", "deployment", VALID["deployment"])
    assert _config(team, "deployment") == VALID["deployment"]
    (locked,) = _audit(team, "pipeline.node.lock")
    (unlocked,) = _audit(team, "pipeline.node.unlock")
    assert locked["before"] == {"locked": False, "locked_by": None}
    assert locked["after"] == {"locked": True, "locked_by": "pat"} and locked["reason"] == "change freeze"
    assert unlocked["before"] == {"locked": True, "locked_by": "pat"}
    assert unlocked["after"] == {"locked": False, "locked_by": None}


def test_a_role_revoked_after_sign_in_no_longer_counts(team: Team) -> None:
    with team.session() as session:
        revoke_role(session, team.admin, "pat", "credit-risk", Role.PRODUCTION_TEAM)
    # team.production still carries the role in memory; the job reads the database.
    with team.session() as session, pytest.raises(Forbidden):
        lock_node(session, team.production, "credit-risk", "features")
    with team.session(write=False) as session:
        assert not node_view(session, team.admin, "credit-risk", "features").locked


def test_stale_editor_is_refused(team: Team) -> None:
    with team.session(write=False) as session:
        opened = node_view(session, team.data, "credit-risk", "features").updated_at
    with team.session() as session:
        update_node_config(
            session, team.data, "credit-risk", "features", VALID["features"], expected_updated_at=opened
        )
    with team.session() as session, pytest.raises(StaleConfig):
        update_node_config(
            session,
            team.data,
            "credit-risk",
            "features",
            {"feature_set": "other"},
            expected_updated_at=opened,
        )
    assert _config(team, "features") == VALID["features"]


def test_record_run_validates_and_stores_the_status(team: Team) -> None:
    with team.session() as session:
        record_run(session, "credit-risk", "inference", "failed")
    with team.session(write=False) as session:
        view = node_view(session, team.data, "credit-risk", "inference")
    assert view.last_status == "failed" and view.last_run_at is not None
    with team.session() as session, pytest.raises(InvalidInput):
        record_run(session, "credit-risk", "inference", "exploded")
    with team.session() as session, pytest.raises(InvalidInput):
        record_run(session, "credit-risk", "inference", "succeeded", at=view.last_run_at.replace(tzinfo=None))
    (entry,) = _audit(team, "pipeline.node.run")
    assert entry["after"]["last_status"] == "failed"


def test_an_edit_waits_for_a_concurrent_lock_and_then_sees_it(team: Team) -> None:
    locked = threading.Event()
    release = threading.Event()
    outcome: dict[str, BaseException | None] = {}

    def lock_and_hold() -> None:
        with team.session() as session:
            lock_node(session, team.production, "credit-risk", "training_registry")
            locked.set()
            release.wait(10)

    def edit() -> None:
        try:
            with team.session() as session:
                update_node_config(
                    session, team.data, "credit-risk", "training_registry", VALID["training_registry"]
                )
            outcome["error"] = None
        except BaseException as error:
            outcome["error"] = error

    holder = threading.Thread(target=lock_and_hold)
    holder.start()
    assert locked.wait(10)
    editor = threading.Thread(target=edit)
    editor.start()
    time.sleep(0.3)
    assert editor.is_alive(), "the edit must wait for the lock's transaction"
    started = time.monotonic()
    release.set()
    holder.join(10)
    editor.join(10)
    assert time.monotonic() - started < timedelta(seconds=10).total_seconds()
    assert isinstance(outcome["error"], NodeLocked)
    assert _config(team, "training_registry") == {}


def test_cli_configures_locks_and_shows(
    team: Team, migrated_database_url: str, capsys: pytest.CaptureFixture
) -> None:
    import argparse

    from app.settings import load_settings

    parser = argparse.ArgumentParser()
    pipelines.register_cli(parser.add_subparsers())
    cli_settings = load_settings({"MMS_DATABASE_URL": migrated_database_url, "MMS_SECRET_KEY": "x" * 40})

    def run(*argv: str) -> int:
        args = parser.parse_args(argv)
        return args.func(args, cli_settings)

    assert (
        run("pipeline", "configure", "credit-risk", "inference", "--actor", "dara", "--set", "mode=online")
        == 0
    )
    assert run("pipeline", "lock", "credit-risk", "inference", "--actor", "pat", "--reason", "go-live") == 0
    with pytest.raises(NodeLocked):
        run(
            "pipeline",
            "configure",
            "credit-risk",
            "inference",
            "--actor",
            "dara",
            "--json",
            '{"mode": "batch"}',
        )
    with pytest.raises(InvalidInput, match="not an active user"):
        run("pipeline", "show", "credit-risk", "--actor", "ghost")
    with pytest.raises(Forbidden):
        run("pipeline", "show", "credit-risk", "--actor", "sam")
    capsys.readouterr()
    assert run("pipeline", "show", "credit-risk", "--actor", "pat") == 0
    printed = capsys.readouterr().out
    assert "inference" in printed and "locked by pat" in printed and '"mode": "online"' in printed

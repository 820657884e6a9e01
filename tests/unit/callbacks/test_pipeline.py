"""Pipeline page callbacks as plain functions: the DAG, the stage form, edits and locks per role."""

from __future__ import annotations

import json
from collections.abc import Iterator

import dash
import pytest
from dash.exceptions import PreventUpdate
from sqlalchemy import select

import callbacks.pipeline as cb
from jobs.db.models import AuditEntry, Pipeline, PipelineNode, Project
from jobs.pipelines import record_run, stage_fields
from jobs.projects import create_project
from tests.unit.app.studio import Studio, as_sent, build_studio, shown, signed_in

pytestmark = pytest.mark.unit

XSS_NAME = "<img src=x onerror=alert(1)>"
INGESTION = {
    "source_uri": "s3://raw/credit",
    "schedule": "0 * * * *",
    "format": "parquet",
    "max_lag_hours": "6",
}


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    """A seeded studio plus ``hidden-project`` (no demo member holds a role on it)."""
    built = build_studio(tmp_path_factory.mktemp("pipeline-callbacks"))
    with built.db(write=True) as session:
        create_project(session, built.actor("admin"), "hidden-project", XSS_NAME)
    with built:
        yield built


def node(studio: Studio, project: str, stage: str) -> PipelineNode:
    with studio.db() as session:
        return session.scalars(
            select(PipelineNode)
            .join(Pipeline, Pipeline.id == PipelineNode.pipeline_id)
            .join(Project, Project.id == Pipeline.project_id)
            .where(Project.slug == project, PipelineNode.stage == stage)
        ).one()


def form_state(stage: str, values: dict[str, str]) -> tuple[list[str], list[dict[str, str]]]:
    """What the browser sends for the form: every field's value and pattern-matching id, in layout order."""
    fields = stage_fields(stage)
    return [values.get(spec.name, "") for spec in fields], [
        {"type": cb.ID.FIELD_TYPE, "name": spec.name} for spec in fields
    ]


def audit_actions(studio: Studio, prefix: str) -> list[tuple[str, str, dict]]:
    with studio.db() as session:
        rows = session.execute(
            select(AuditEntry.actor, AuditEntry.action, AuditEntry.details)
            .where(AuditEntry.action.startswith(prefix))
            .order_by(AuditEntry.seq)
        ).all()
    return [(actor, action, json.loads(details)) for actor, action, details in rows]


def test_dag_has_eight_stages_coloured_by_last_run(studio: Studio) -> None:
    with studio.db(write=True) as session:
        record_run(session, "demand-forecast", "ingestion", "succeeded")
        record_run(session, "demand-forecast", "training_registry", "failed")
    with signed_in(studio, "monitoring"):
        graph, table = cb.show_pipeline("demand-forecast")
    elements = graph.elements
    assert graph.id == "pipeline-dag" and graph.stylesheet == cb.DAG_STYLESHEET
    nodes = [e for e in elements if "source" not in e["data"]]
    edges = [e for e in elements if "source" in e["data"]]
    assert [n["data"]["id"] for n in nodes] == [
        "ingestion",
        "preparation",
        "features",
        "training_registry",
        "deployment",
        "inference",
        "monitoring",
        "feedback",
    ]
    assert [(e["data"]["source"], e["data"]["target"]) for e in edges][:2] == [
        ("ingestion", "preparation"),
        ("preparation", "features"),
    ]
    assert len(edges) == 7
    classes = {n["data"]["id"]: n["classes"].split() for n in nodes}
    assert "status-succeeded" in classes["ingestion"] and "status-failed" in classes["training_registry"]
    assert "status-never_run" in classes["feedback"] and "incomplete" in classes["feedback"]
    assert len({n["position"]["x"] for n in nodes}) == 8
    rows = shown(table)
    assert "Training & registry" in rows and "failed" in rows and "succeeded" in rows


def test_tapping_a_node_selects_its_stage(studio: Studio) -> None:
    with signed_in(studio, "sponsor1"), pytest.raises(PreventUpdate):
        cb.select_tapped_stage({"id": "monitoring"})  # sponsors do not see pipelines
    with signed_in(studio, "datateam"):
        assert cb.select_tapped_stage({"id": "monitoring", "label": "Monitoring"}) == "monitoring"
        with pytest.raises(PreventUpdate):
            cb.select_tapped_stage({"id": "ingestion->preparation"})


def test_buttons_follow_the_role_and_the_lock(studio: Studio) -> None:
    with signed_in(studio, "production"):
        _info, form, _version, save_disabled, lock_disabled, unlock_disabled = cb.show_node(
            "credit-risk", "features"
        )
    assert (save_disabled, lock_disabled, unlock_disabled) == (True, False, True)
    assert all(control["props"]["children"][1]["props"]["disabled"] for control in as_sent(form))
    with signed_in(studio, "datateam"):
        info, form, version, save_disabled, lock_disabled, unlock_disabled = cb.show_node(
            "credit-risk", "features"
        )
    assert (save_disabled, lock_disabled, unlock_disabled) == (False, True, True)
    assert version is not None
    assert "Features" in shown(info)
    labels = shown(form)
    assert "Feature set *" in labels and "Numeric features" in labels


def test_data_team_saves_a_valid_configuration_with_an_audited_before_and_after(studio: Studio) -> None:
    with signed_in(studio, "datateam"):
        *_, version, _s, _l, _u = cb.show_node("credit-risk", "ingestion")
        values, ids = form_state("ingestion", INGESTION)
        message, refresh = cb.save_node_clicked(1, "credit-risk", "ingestion", values, ids, version, 7)
    assert message.color == "success", message.children
    assert refresh == 8
    stored = node(studio, "credit-risk", "ingestion")
    assert stored.config == {
        "source_uri": "s3://raw/credit",
        "schedule": "0 * * * *",
        "format": "parquet",
        "max_lag_hours": 6,
    }
    actor, action, details = audit_actions(studio, "pipeline.node.update")[-1]
    assert (actor, action) == ("datateam", "pipeline.node.update")
    assert details["before"] == {} and details["after"] == stored.config
    assert (details["project"], details["stage"]) == ("credit-risk", "ingestion")


def test_invalid_form_is_refused_field_by_field_and_nothing_is_written(studio: Studio) -> None:
    before = node(studio, "credit-risk", "monitoring").config
    with signed_in(studio, "mlengineer"):
        values, ids = form_state(
            "monitoring",
            {"window": "day", "drift_policy": "ks", "drift_threshold": "2", "label_horizon_days": "many"},
        )
        message, refresh = cb.save_node_clicked(1, "credit-risk", "monitoring", values, ids, None, 1)
    assert message.color == "danger"
    assert "label_horizon_days: must be a whole number" in message.children
    assert refresh is dash.no_update
    assert node(studio, "credit-risk", "monitoring").config == before


@pytest.mark.parametrize("username", ["production", "monitoring", "sponsor1"])
def test_roles_without_edit_pipeline_cannot_save(studio: Studio, username: str) -> None:
    updates = len(audit_actions(studio, "pipeline.node.update"))
    values, ids = form_state("preparation", {"null_policy": "drop_rows"})
    with signed_in(studio, username), pytest.raises(PreventUpdate):
        cb.save_node_clicked(1, "credit-risk", "preparation", values, ids, None, 0)
    assert node(studio, "credit-risk", "preparation").config == {}
    assert len(audit_actions(studio, "pipeline.node.update")) == updates


def test_production_locks_and_the_locked_node_refuses_edits(studio: Studio) -> None:
    values, ids = form_state("preparation", {"null_policy": "impute", "dedupe_keys": "loan_id, day"})
    with signed_in(studio, "datateam"), pytest.raises(PreventUpdate):
        cb.lock_clicked(1, "credit-risk", "preparation", "", 0)  # data team may edit, not lock
    with signed_in(studio, "production"):
        locked, refresh = cb.lock_clicked(1, "credit-risk", "preparation", "release freeze", 3)
        twice, _ = cb.lock_clicked(1, "credit-risk", "preparation", "", 4)
    assert locked.color == "success" and refresh == 4
    assert twice.color == "danger" and "already locked by production" in twice.children
    assert node(studio, "credit-risk", "preparation").locked

    with signed_in(studio, "datateam"):
        _info, _form, _version, save_disabled, _l, _u = cb.show_node("credit-risk", "preparation")
        refused, _ = cb.save_node_clicked(1, "credit-risk", "preparation", values, ids, None, 0)
        with pytest.raises(PreventUpdate):
            cb.unlock_clicked(1, "credit-risk", "preparation", "", 0)
    assert save_disabled
    assert refused.color == "danger" and "locked by production" in refused.children
    assert node(studio, "credit-risk", "preparation").config == {}

    with signed_in(studio, "production"):
        unlocked, _ = cb.unlock_clicked(1, "credit-risk", "preparation", "", 5)
    assert unlocked.color == "success"
    with signed_in(studio, "datateam"):
        saved, _ = cb.save_node_clicked(1, "credit-risk", "preparation", values, ids, None, 0)
    assert saved.color == "success"
    assert node(studio, "credit-risk", "preparation").config["dedupe_keys"] == ["loan_id", "day"]
    lock_entries = [entry for entry in audit_actions(studio, "pipeline.node.") if "lock" in entry[1]]
    assert [(actor, action) for actor, action, _ in lock_entries] == [
        ("production", "pipeline.node.lock"),
        ("production", "pipeline.node.unlock"),
    ]
    lock_details = lock_entries[0][2]
    assert lock_details["before"] == {"locked": False, "locked_by": None}
    assert lock_details["after"] == {"locked": True, "locked_by": "production"}
    assert lock_details["reason"] == "release freeze"


def test_a_form_opened_before_another_change_is_refused_as_stale(studio: Studio) -> None:
    with signed_in(studio, "datateam"):
        *_, version, _s, _l, _u = cb.show_node("credit-risk", "feedback")
        first, ids = form_state("feedback", {"label_source_uri": "s3://labels/credit", "join_key": "loan_id"})
        assert (
            cb.save_node_clicked(1, "credit-risk", "feedback", first, ids, version, 0)[0].color == "success"
        )
        second, ids = form_state("feedback", {"label_source_uri": "s3://labels/other", "join_key": "loan_id"})
        stale, _ = cb.save_node_clicked(1, "credit-risk", "feedback", second, ids, version, 0)
    assert stale.color == "danger" and "changed since you opened it" in stale.children
    assert node(studio, "credit-risk", "feedback").config["label_source_uri"] == "s3://labels/credit"


def test_forged_project_gets_nothing(studio: Studio) -> None:
    values, ids = form_state("ingestion", INGESTION)
    with signed_in(studio, "datateam"):
        for call in (
            lambda: cb.show_pipeline("hidden-project"),
            lambda: cb.show_node("hidden-project", "ingestion"),
            lambda: cb.save_node_clicked(1, "hidden-project", "ingestion", values, ids, None, 0),
            lambda: cb.show_pipeline("no-such-project"),
        ):
            with pytest.raises(PreventUpdate):
                call()
        options, value, stages, legend = cb.list_pipeline_projects("pipeline-project", "hidden-project")
    assert "hidden-project" not in [option["value"] for option in options] and value == "credit-risk"
    assert stages[0] == {"label": "Ingestion", "value": "ingestion"} and len(stages) == 8
    assert "failed" in shown(legend)
    with signed_in(studio, "production"), pytest.raises(PreventUpdate):
        cb.lock_clicked(1, "hidden-project", "ingestion", "", 0)
    assert node(studio, "hidden-project", "ingestion").config == {}
    assert not node(studio, "hidden-project", "ingestion").locked


def test_sponsors_do_not_see_pipelines(studio: Studio) -> None:
    with signed_in(studio, "sponsor1"):
        with pytest.raises(PreventUpdate):
            cb.show_pipeline("credit-risk")
        with pytest.raises(PreventUpdate):
            cb.list_pipeline_projects("pipeline-project", None)


def test_project_name_with_markup_is_a_plain_option_label(studio: Studio) -> None:
    with signed_in(studio, "admin"):
        options, *_ = cb.list_pipeline_projects("pipeline-project", None)
    # A plain string label: the native <select> shows it as text.
    assert f"{XSS_NAME} (hidden-project)" in [option["label"] for option in options]

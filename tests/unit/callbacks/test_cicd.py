"""CI/CD page callbacks on a real studio: deployments (live view, actions through jobs.deploy) and runs."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from typing import Any

import dash
import pytest
from dash.exceptions import PreventUpdate
from sqlalchemy import select

import callbacks.cicd as cb
from jobs import deploy
from jobs.db.governance import Deployment
from jobs.db.models import AuditEntry
from jobs.permissions import Role
from jobs.projects import create_project
from jobs.users import actor_for, create_user, get_user, grant_role
from tests.unit.app.studio import (
    Studio,
    as_sent,
    build_studio,
    callback_request,
    component_ids,
    csrf_header,
    shown,
    signed_in,
)
from tests.unit.callbacks.cicd_rows import (
    FAILED_ANALYSIS,
    PASSED_ANALYSIS,
    SHA,
    XSS,
    add_deployment,
    add_request,
    add_run,
)

pytestmark = pytest.mark.unit

HIDDEN_ALL = (True, True, True, True, True)


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    built = build_studio(tmp_path_factory.mktemp("cicd-callbacks"))
    with built.db(write=True) as session:
        admin = actor_for(session, get_user(session, "admin").id)
        # Production Team on demand-forecast only (ML engineer on credit-risk).
        user = create_user(session, admin, "ops-forecast", "ops-forecast-password")
        grant_role(session, admin, user, "demand-forecast", Role.PRODUCTION_TEAM)
        grant_role(session, admin, user, "credit-risk", Role.ML_ENGINEER)
    with built:
        yield built


def bar_labels(node: Any) -> list[str]:
    """The labels of the traffic bars in a component tree."""
    found: list[str] = []
    if isinstance(node, dict):
        props = node.get("props")
        if node.get("type") == "Progress" and isinstance(props, dict) and isinstance(props.get("label"), str):
            found.append(props["label"])
        for value in node.values():
            found += bar_labels(value)
    elif isinstance(node, list):
        for value in node:
            found += bar_labels(value)
    return found


def _deployments(
    studio: Studio, username: str, project: str = "", environment: str = "", page: int = 1
) -> Any:
    with signed_in(studio, username):
        return cb.show_deployments(project, environment, page, 0, 0, None)


def _detail(studio: Studio, username: str, deployment_id: int) -> Any:
    with signed_in(studio, username):
        return cb.show_deployment(str(deployment_id), 0, 0)


def _status(studio: Studio, deployment_id: int) -> tuple[str, str | None]:
    with studio.db() as session:
        row = session.get(Deployment, deployment_id)
        return row.status, row.requested_action


# --------------------------------------------------------------------------- wiring


def test_every_component_the_callbacks_use_is_on_the_page(studio: Studio) -> None:
    page = importlib.import_module("pages.cicd")
    assert page.ID is cb.ID and page.ALL == cb.ALL  # one declaration (app.components.ids.cicd)
    with signed_in(studio, "production"):
        in_layout = component_ids(as_sent(page.layout()))
    used: set[str] = set()
    for output, entry in studio.app.callback_map.items():
        if "cicd-" not in output:
            continue
        used |= {spec["id"] for spec in [*entry["inputs"], *entry["state"]]}
        used |= {part.split(".")[0] for part in output.strip(".").split("...")}
    assert used and used <= in_layout, used - in_layout
    assert set(cb.ACTION_SECTIONS) == set(deploy.ACTIONS)


def test_action_permissions_match_the_job(studio: Studio) -> None:
    # The job's own map is private; its docstring and behaviour are the contract: check them both ways.
    assert cb.ACTION_PERMISSIONS == {
        "promote": cb.Permission.DEPLOY,
        "pause": cb.Permission.DEPLOY,
        "resume": cb.Permission.DEPLOY,
        "abort": cb.Permission.ROLLBACK,
        "rollback": cb.Permission.ROLLBACK,
    }
    entries = {
        getattr(entry["callback"], "__name__", ""): entry["callback"]
        for entry in studio.app.callback_map.values()
    }
    for name, permission in (
        ("promote_confirmed", "deploy"),
        ("pause_confirmed", "deploy"),
        ("resume_confirmed", "deploy"),
        ("abort_confirmed", "rollback"),
        ("rollback_confirmed", "rollback"),
    ):
        assert entries[name].__mms_permission__.value == permission


# --------------------------------------------------------------------------- deployments


def test_deployments_show_step_traffic_analysis_and_reason(studio: Studio) -> None:
    with studio.db(write=True) as session:
        running = add_deployment(
            session, "credit-risk", "scorecard", "2", "staging", analysis=PASSED_ANALYSIS
        )
        rolled = add_deployment(
            session,
            "credit-risk",
            "scorecard",
            "3",
            "prod",
            status="rolled_back",
            current_step=0,
            canary_weight=0,
            reason="success_rate 0.93 < 0.99",
            analysis=FAILED_ANALYSIS,
        )
    table, info, no_previous, no_next, options, value = _deployments(studio, "production", "credit-risk")
    text = shown(table)
    assert info.startswith("Page 1") and no_previous and no_next
    assert value == str(rolled)  # newest first, the first one selected
    assert [o["value"] for o in options][:2] == [str(rolled), str(running)]
    row_node = as_sent(table)["props"]["children"][1]["props"]["children"][1]
    row = shown(row_node)
    assert row[:9] == [
        str(running),
        "credit-risk",
        "staging",
        "scorecard",
        "v2",
        " ",
        "current",
        "canary",
        "running",
    ]
    assert "step 2 of 4 (25%)" in row and "2/2 passed" in row
    assert bar_labels(row_node) == ["v1 75%", "v2 25%"]
    assert "1 failed: Success rate" in text and "success_rate 0.93 < 0.99" in text

    detail, *hidden = _detail(studio, "production", rolled)
    detail_text = shown(detail)
    assert "Rolled back: " in detail_text and "success_rate 0.93 < 0.99" in detail_text
    start = detail_text.index("Success rate")
    assert detail_text[start : start + 5] == ["Success rate", "0.93", "0.999", "0.99", "fail"]
    assert bar_labels(as_sent(detail)) == ["v1 100%"]  # everything back on the stable version
    assert {"queued", "started", "analysis", "rolled_back"} <= set(detail_text)
    assert tuple(hidden) == HIDDEN_ALL  # nothing to do on a rolled-back canary

    detail, *hidden = _detail(studio, "production", running)
    assert "Steps: " in shown(detail) and "bake 300 s per step" in "".join(shown(detail))
    assert dict(zip(cb.ACTION_SECTIONS, hidden, strict=True)) == {
        "promote": False,
        "pause": False,
        "resume": True,
        "abort": False,
        "rollback": False,
    }


def test_filters_paging_and_empty_states(studio: Studio, monkeypatch: pytest.MonkeyPatch) -> None:
    with studio.db(write=True) as session:
        ids = [
            add_deployment(
                session, "demand-forecast", "forecast", str(v), "dev", strategy="direct", status="succeeded"
            )
            for v in range(1, 6)
        ]
    monkeypatch.setattr(cb, "DEPLOYMENTS_PAGE_SIZE", 2)
    first = _deployments(studio, "production", "demand-forecast", "dev", 1)
    second = _deployments(studio, "production", "demand-forecast", "dev", 2)
    last = _deployments(studio, "production", "demand-forecast", "dev", 3)
    assert [o["value"] for o in first[4]] == [str(ids[4]), str(ids[3])]
    assert first[2:4] == (True, False) and second[2:4] == (False, False) and last[2:4] == (False, True)
    assert [o["value"] for o in last[4]] == [str(ids[0])]
    assert "deployments 5 to 5" in last[1]
    assert "single switch" in shown(first[0]) and bar_labels(as_sent(first[0]))[0] == "v5 100%"
    empty = _deployments(studio, "production", "demand-forecast", "prod")
    assert "No deployment of project demand-forecast in prod yet." in shown(empty[0])[0]
    assert empty[4:] == ([], None)
    with signed_in(studio, "production"):
        assert cb.previous_deployments(1, 3) == 2 and cb.next_deployments(1, 2) == 3
        assert cb.first_pages_on_filter("credit-risk", "") == (1, [])
        assert cb.show_deployment(None, 0, 0)[1:] == HIDDEN_ALL


def test_actions_follow_the_role_on_the_deployments_project(studio: Studio) -> None:
    with studio.db(write=True) as session:
        credit = add_deployment(session, "credit-risk", "scorecard", "7", "dev")
        forecast = add_deployment(session, "demand-forecast", "forecast", "7", "staging", status="paused")
    for username in ("mlengineer", "datateam", "monitoring"):
        assert tuple(_detail(studio, username, credit)[1:]) == HIDDEN_ALL
    assert tuple(_detail(studio, "admin", credit)[1:]) == (False, False, True, False, False)
    # Production Team on demand-forecast only: the actions there, none on credit-risk.
    assert tuple(_detail(studio, "ops-forecast", credit)[1:]) == HIDDEN_ALL
    assert tuple(_detail(studio, "ops-forecast", forecast)[1:]) == (False, True, False, False, False)
    # A forged call for the other project reaches the job, which refuses it: shown, nothing changes.
    with signed_in(studio, "ops-forecast"):
        refused, refresh = cb.pause_confirmed(1, str(credit), "", 4)
    assert refused.color == "danger" and "may not deploy on project 'credit-risk'" in shown(refused)[0]
    assert refresh is dash.no_update and _status(studio, credit) == ("running", None)
    for username in ("mlengineer", "sponsor1"):
        with signed_in(studio, username):
            for action in (
                cb.promote_confirmed,
                cb.pause_confirmed,
                cb.abort_confirmed,
                cb.rollback_confirmed,
            ):
                with pytest.raises(PreventUpdate):
                    action(1, str(credit), "because", 0)
    assert _status(studio, credit) == ("running", None)


def test_production_pauses_then_aborts_with_a_reason(studio: Studio) -> None:
    with studio.db(write=True) as session:
        running = add_deployment(session, "credit-risk", "scorecard", "8", "staging")
        queued = add_deployment(
            session,
            "credit-risk",
            "challenger",
            "1",
            "staging",
            status="queued",
            current_step=None,
            canary_weight=0,
        )
    with signed_in(studio, "production"):
        paused, refresh = cb.pause_confirmed(1, str(running), "", 2)
        again, unchanged = cb.promote_confirmed(1, str(running), "", 3)
        no_reason, _ = cb.abort_confirmed(1, str(queued), "  ", 3)
        aborted, _ = cb.abort_confirmed(1, str(queued), "wrong features", 3)
        none_selected, _ = cb.resume_confirmed(1, None, "", 3)
        with pytest.raises(PreventUpdate):
            cb.rollback_confirmed(0, str(running), "x", 3)
    assert paused.color == "success" and refresh == 3
    assert none_selected.color == "danger" and shown(none_selected) == ["Select a deployment first."]
    assert "Pause requested for deployment" in shown(paused)[0]
    assert _status(studio, running) == ("running", "pause")
    assert again.color == "danger" and "pause requested" in shown(again)[0] and unchanged is dash.no_update
    assert no_reason.color == "danger" and "a reason is required" in shown(no_reason)[0]
    assert aborted.color == "success" and f"Deployment #{queued} is now aborted." == shown(aborted)[0]
    assert _status(studio, queued)[0] == "aborted"
    detail, *hidden = _detail(studio, "production", running)
    assert "pause requested; the deployment job carries it out at its next poll." in shown(detail)
    assert tuple(hidden) == HIDDEN_ALL  # nothing more until the job has acted
    with studio.db() as session:
        audited = session.execute(
            select(AuditEntry.actor, AuditEntry.action, AuditEntry.target).where(
                AuditEntry.target.in_([f"deployment:{running}", f"deployment:{queued}"])
            )
        ).all()
    assert sorted(audited) == sorted(
        [
            ("production", "deployment.pause", f"deployment:{running}"),
            ("production", "deployment.abort", f"deployment:{queued}"),
        ]
    )


def test_roles_without_view_cicd_see_nothing(studio: Studio) -> None:
    with signed_in(studio, "sponsor1"):
        for call, args in (
            (cb.list_cicd_projects, (cb.ID.PROJECT, None)),
            (cb.show_deployments, ("", "", 1, 0, 0, None)),
            (cb.show_deployment, ("1", 0, 0)),
            (cb.show_runs, ("", [], 0)),
        ):
            with pytest.raises(PreventUpdate):
                call(*args)
    client = studio.signed_in("sponsor2", "10.7.0.1")
    (output,) = [o for o in studio.app.callback_map if o.strip(".").startswith(f"{cb.ID.DETAIL}.children")]
    body = callback_request(output, [], [{"id": cb.ID.DEPLOYMENT, "property": "value", "value": "1"}])
    assert client.post("/_dash-update-component", json=body, headers=csrf_header(client)).status_code == 403
    assert client.get("/cicd").status_code == 403


def test_project_options_are_the_visible_projects(studio: Studio) -> None:
    with studio.db(write=True) as session:
        add_deployment(session, "credit-risk", "options", "1", "dev")
        add_deployment(session, "demand-forecast", "options", "1", "dev")
    with signed_in(studio, "ops-forecast"):
        options, value = cb.list_cicd_projects(cb.ID.PROJECT, "demand-forecast")
    assert [o["value"] for o in options] == ["*", "credit-risk", "demand-forecast"]
    assert value == "demand-forecast"
    with signed_in(studio, "production"):
        assert cb.list_cicd_projects(cb.ID.PROJECT, "no-such-project")[1] == cb.ALL
        everywhere = cb.show_deployments(cb.ALL, cb.ALL, 1, 0, 0, None)[0]
    assert {"credit-risk", "demand-forecast"} <= set(shown(everywhere))


# --------------------------------------------------------------------------- workflow runs


def test_runs_show_commit_versions_and_their_promotion_requests(studio: Studio) -> None:
    with studio.db(write=True) as session:
        add_request(
            session, "credit-risk", "pd-model", "4", "prod", approvers=("sponsor1", "sponsor2"), required=2
        )
        run_id = add_run(
            session,
            "credit-risk",
            901,
            versions=[{"model": "pd-model", "version": "4"}],
            name="Train and register",
        )
        add_run(
            session,
            "credit-risk",
            902,
            status="in_progress",
            conclusion=None,
            sha="a" * 40,
            branch="feature/x",
        )
    with signed_in(studio, "production"):
        table, info, no_previous, *_ = cb.show_runs("credit-risk", [], 0)
    assert info.startswith("Page 1") and no_previous
    rows = as_sent(table)["props"]["children"][1]["props"]["children"]
    row = next(r for r in rows if r["props"]["id"] == f"cicd-run-row-{run_id}")
    text = shown(row)
    assert text[:3] == ["Train and register", "credit-risk", "main"]
    assert SHA[:7] in text and "completed · success" in text and "pd-model v4" in text
    assert any(t.endswith("→ prod: approved (2/2 approvals: sponsor1, sponsor2)") for t in text)
    links = _links(row)
    assert f"https://github.com/example-org/credit-models/commit/{SHA}" in links
    assert "https://github.com/example-org/credit-models/actions/runs/901" in links
    assert all(link.startswith("https://github.com/") for link in links)
    in_progress = shown(next(r for r in rows if r["props"]["id"] != f"cicd-run-row-{run_id}"))
    assert "in_progress" in in_progress and "feature/x" in in_progress and "—" in in_progress
    # Someone without VIEW_APPROVALS would not see the requests; a monitoring member may see both.
    with signed_in(studio, "monitoring"):
        assert "pd-model v4" in shown(cb.show_runs("credit-risk", [], 0)[0])


def _links(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        href = node.get("props", {}).get("href") if isinstance(node.get("props"), dict) else None
        if isinstance(href, str):
            found.append(href)
        for value in node.values():
            found += _links(value)
    elif isinstance(node, list):
        for value in node:
            found += _links(value)
    return found


def test_payload_text_renders_as_text_and_foreign_urls_are_not_linked(studio: Studio) -> None:
    with studio.db(write=True) as session:
        run_id = add_run(
            session,
            "demand-forecast",
            903,
            branch=XSS,
            name=XSS,
            html_url="javascript:alert(1)",
            repository="example-org/forecast",
        )
    with signed_in(studio, "admin"):
        table = as_sent(cb.show_runs("demand-forecast", [], 0)[0])
    row = next(
        r
        for r in table["props"]["children"][1]["props"]["children"]
        if r["props"]["id"] == f"cicd-run-row-{run_id}"
    )
    text = shown(row)
    assert text.count(XSS) == 2  # workflow name and branch, as plain strings
    assert "javascript:alert(1)" not in _links(row)
    assert _links(row) == [f"https://github.com/example-org/forecast/commit/{SHA}"]
    assert "Img" not in json.dumps(row)  # no component was made from the text


def test_runs_paging_and_empty_state(studio: Studio, monkeypatch: pytest.MonkeyPatch) -> None:
    with studio.db(write=True) as session:
        admin = actor_for(session, get_user(session, "admin").id)
        create_project(session, admin, "paging-runs", "Paging runs")
        ids = [add_run(session, "paging-runs", 1000 + n, repository="example-org/paging") for n in range(5)]
    monkeypatch.setattr(cb, "RUNS_PAGE_SIZE", 2)
    with signed_in(studio, "admin"):
        first = cb.show_runs("paging-runs", [], 0)
        assert first[2:] == (True, False, ids[3])
        cursors = cb.next_runs(1, [], first[4])
        second = cb.show_runs("paging-runs", cursors, 0)
        cursors = cb.next_runs(1, cursors, second[4])
        third = cb.show_runs("paging-runs", cursors, 0)
        assert cb.previous_runs(1, cursors) == [ids[3]]
        with pytest.raises(PreventUpdate):
            cb.next_runs(1, cursors, None)
    assert [r["props"]["id"] for r in as_sent(first[0])["props"]["children"][1]["props"]["children"]] == [
        f"cicd-run-row-{ids[4]}",
        f"cicd-run-row-{ids[3]}",
    ]
    assert second[2:] == (False, False, ids[1]) and "runs 3 to 4" in second[1]
    assert third[2:] == (False, True, None)
    with studio.db(write=True) as session:
        create_project(session, actor_for(session, get_user(session, "admin").id), "no-runs", "No runs")
    with signed_in(studio, "admin"):
        nothing = cb.show_runs("no-runs", [], 0)
    assert "No GitHub workflow run received for project no-runs." in shown(nothing[0])[0]
    with signed_in(studio, "ops-forecast"):
        refused = cb.show_runs("no-runs", [], 0)
    assert "You may not view CI/CD of project no-runs." in shown(refused[0])[0]


def test_forged_action_requests_are_refused_by_the_guard(studio: Studio) -> None:
    with studio.db(write=True) as session:
        target = add_deployment(session, "credit-risk", "forged", "2", "dev")
    (output,) = [
        o
        for o in studio.app.callback_map
        if f"{cb.ID.ACTION_MESSAGE}.children" in o and "rollback" in str(studio.app.callback_map[o]["inputs"])
    ]
    body = callback_request(
        output,
        [{"id": cb.ID.ACTION_MESSAGE, "property": "children"}, {"id": cb.ID.REFRESH, "property": "data"}],
        [{"id": cb.ID.ROLLBACK_CONFIRM, "property": "submit_n_clicks", "value": 1}],
    )
    body["state"] = [
        {"id": cb.ID.DEPLOYMENT, "property": "value", "value": str(target)},
        {"id": cb.ID.REASON, "property": "value", "value": "forged"},
        {"id": cb.ID.REFRESH, "property": "data", "value": 0},
    ]
    for username in ("mlengineer", "sponsor1"):
        client = studio.signed_in(username, "10.7.0.2")
        response = client.post("/_dash-update-component", json=body, headers=csrf_header(client))
        assert response.status_code == 403, username
    assert _status(studio, target) == ("running", None)
    client = studio.signed_in("production", "10.7.0.3")
    response = client.post("/_dash-update-component", json=body, headers=csrf_header(client))
    assert response.status_code == 200
    assert f"Rollback requested for deployment #{target}" in json.dumps(response.get_json())
    assert _status(studio, target) == ("running", "rollback")

"""Approvals page callbacks on a seeded studio: the inbox, its evidence, decisions and new requests.

Plain calls run inside a Flask request context with a signed-in demo user, so ``@requires`` and the
job commands (``jobs.approvals``) run as in production; the guard's refusals go through
``/_dash-update-component`` like the browser.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from dash.exceptions import PreventUpdate
from plotly.utils import PlotlyJSONEncoder
from sqlalchemy import func, select

import callbacks.approvals as cb
from analytics.store import ParquetStore
from app.auth import services
from jobs.approvals import RequestPromotion, VersionInfo
from jobs.db.governance import Deployment, PromotionRequest
from jobs.db.models import AuditEntry
from tests.unit.app.studio import (
    Studio,
    build_studio,
    callback_request,
    component_ids,
    csrf_header,
    shown,
    signed_in,
)
from tests.unit.jobs.test_approvals import _metric_rows, _write_metrics

pytestmark = pytest.mark.unit

XSS = "<img src=x onerror=alert(1)>"
V3 = VersionInfo(version="3", run_id="3f2a" * 8, artifact_digest="ab" * 32, created_by="mlengineer")
V5 = VersionInfo(version="5", run_id="5c0d" * 8, artifact_digest="ef" * 32, created_by="datateam")
DECISION_OUTPUT = "..approvals-message.children...approvals-decided.data.."


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    """A seeded studio with monitoring metrics of credit-default versions 2 (prod) and 3 (staging)."""
    built = build_studio(tmp_path_factory.mktemp("approvals-callbacks"), hidden_project=True)
    store = ParquetStore(built.settings.store_config())
    try:
        for day, auc in ((1, 0.80), (2, 0.70)):
            rows = [("income", "psi", 0.3, True, "drift", 1000), ("score", "roc_auc", auc, None, "ok", 1000)]
            _write_metrics(store, "prod", day, _metric_rows("2", day, rows))
        staging = [
            ("income", "psi", 0.02, False, "ok", 200),
            ("debt_to_income", "null_rate", 0.6, None, "warning", 200),
            ("score", "roc_auc", 0.84, None, "ok", 200),
        ]
        _write_metrics(store, "staging", 2, _metric_rows("3", 2, staging))
    finally:
        store.close()
    with built:
        yield built


def serialized(component: Any) -> str:
    return json.dumps(component, cls=PlotlyJSONEncoder)


def _request(
    studio: Studio,
    info: VersionInfo,
    environment: str,
    model: str = "credit-default",
    who: str = "mlengineer",
) -> int:
    made = RequestPromotion(
        studio.actor(who),
        "credit-risk",
        model,
        info.version,
        environment,
        f"better AUC {XSS}",
        version_info=info,
    ).run(services(studio.app.server).session_factory)
    return made.id


def _binding(info: VersionInfo) -> dict[str, str]:
    return {"version": info.version, "run_id": info.run_id, "artifact_digest": info.artifact_digest}


def _card(cards: Any, request_id: int) -> Any:
    return next(card for card in cards if getattr(card, "id", None) == cb.card_id(request_id))


def _count(studio: Studio, model: type, *where: Any) -> int:
    with studio.db() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


# --------------------------------------------------------------------------- wiring


def test_every_component_the_callbacks_use_is_on_the_page(studio: Studio) -> None:
    page = importlib.import_module("pages.approvals")
    assert page.ID is cb.ID and page.ANY == cb.ANY  # one declaration (app.components.ids.approvals)
    with signed_in(studio, "admin"):
        layout = json.loads(serialized(page.layout()))
    in_layout = component_ids(layout)
    used: set[str] = set()
    for output, entry in studio.app.callback_map.items():
        if getattr(entry.get("callback"), "__module__", "") != "callbacks.approvals":
            continue
        used |= {spec["id"] for spec in entry["inputs"] + entry["state"]}
        used |= {part.split(".")[0] for part in output.strip(".").split("...")}
    patterns = {component for component in used if component.startswith("{")}
    assert {json.loads(p)["type"] for p in patterns} == {
        cb.ID.APPROVE_TYPE,
        cb.ID.REJECT_TYPE,
        cb.ID.COMMENT_TYPE,
        cb.ID.BINDING_TYPE,
    }
    assert (used - patterns) <= in_layout, (used - patterns) - in_layout


def test_request_form_is_for_those_who_may_request(studio: Studio) -> None:
    with signed_in(studio, "mlengineer"):
        visible, requestable, first, style = cb.fill_choices(cb.ID.PROJECT)
    assert style == cb.SHOWN and first in ("credit-risk", "demand-forecast")
    assert {o["value"] for o in requestable} == {"credit-risk", "demand-forecast"}
    assert visible[0] == {"label": "All projects", "value": "all"}
    with signed_in(studio, "sponsor1"):
        visible, requestable, first, style = cb.fill_choices(cb.ID.PROJECT)
    assert style == cb.HIDDEN and requestable == [] and first is None
    assert "hidden-project" not in {o["value"] for o in visible}


# --------------------------------------------------------------------------- the inbox


def test_inbox_shows_pending_first_with_evidence_binding_and_who_asked(studio: Studio) -> None:
    closed = _request(studio, V3, "staging", model="closed-model")
    with signed_in(studio, "sponsor1"):
        cb.decide(studio.actor("sponsor1"), "reject", closed, "not now", None)
    pending = _request(studio, V3, "prod")
    with signed_in(studio, "sponsor2"):
        cards = cb.show_requests("credit-risk", "all", "all")
    ids = [card.id for card in cards]
    assert ids.index(cb.card_id(pending)) < ids.index(cb.card_id(closed))  # pending first
    card = shown(_card(cards, pending))
    assert "pending" in card and "0 of 2 required" in card
    assert "mlengineer on" in " ".join(card)  # who asked
    assert f"better AUC {XSS}" in card  # user text stays text
    assert V3.run_id in card and V3.artifact_digest in card and "3 (created by mlengineer)" in card
    # Evidence: candidate 3 from staging against version 2 serving prod.
    assert "Candidate: version 3" in card and "Current: version 2" in card
    assert "1 of 1 checks failed (debt_to_income)" in card and "2 of 2 checks drifted (income)" in card
    assert "roc_auc" in card and "better" in card and "+0.09" in card
    text = serialized(_card(cards, pending))
    assert "dangerously" not in text and '"type": "Markdown"' not in text
    # The sponsor may approve: both buttons and the binding of exactly this version.
    assert cb.ID.APPROVE_TYPE in text and cb.ID.REJECT_TYPE in text and V3.artifact_digest in text
    rejected = shown(_card(cards, closed))
    assert "rejected" in rejected and any("by sponsor1: not now" in line for line in rejected)
    assert cb.ID.APPROVE_TYPE not in serialized(_card(cards, closed))


def test_filters_and_insufficient_evidence(studio: Studio) -> None:
    request_id = _request(studio, V5, "staging", model="new-model")
    prod_id = _request(studio, V5, "prod", model="new-model")
    with signed_in(studio, "sponsor1"):
        only_staging = cb.show_requests("credit-risk", "staging", "pending")
        only_prod = cb.show_requests("all", "prod", "all")
        nothing = cb.show_requests("credit-risk", "dev", "superseded")
    card = shown(_card(only_staging, request_id))
    assert any(line.startswith("Insufficient data: version 5 has no evaluated metrics") for line in card)
    headers = [shown(c)[0] for c in only_staging]
    assert headers and all(h.endswith("→ staging") for h in headers)
    assert all("pending" in shown(c) for c in only_staging)
    assert cb.card_id(prod_id) in [c.id for c in only_prod]
    assert all(shown(c)[0].endswith("→ prod") for c in only_prod)
    assert shown(nothing) == ["No promotion request matches."]


def test_non_sponsors_get_no_buttons_and_forged_projects_nothing(studio: Studio) -> None:
    pending = _request(studio, V5, "prod", model="buttons-model")
    for username in ("mlengineer", "production", "admin"):
        with signed_in(studio, username):
            cards = cb.show_requests("credit-risk", "all", "pending")
        text = serialized(_card(cards, pending))
        assert cb.ID.APPROVE_TYPE not in text and cb.ID.REJECT_TYPE not in text, username
    with signed_in(studio, "sponsor1"), pytest.raises(PreventUpdate):
        cb.show_requests("hidden-project", "all", "all")


def test_requester_and_creator_see_why_they_may_not_approve(studio: Studio) -> None:
    pending = _request(
        studio, VersionInfo("7", "7a7a" * 8, "77" * 32, "sponsor2"), "staging", "creator-model"
    )
    with signed_in(studio, "sponsor2"):
        cards = cb.show_requests("credit-risk", "all", "pending")
    text = serialized(_card(cards, pending))
    assert cb.ID.APPROVE_TYPE not in text and cb.ID.REJECT_TYPE in text
    assert "You created version 7: another sponsor approves it." in shown(_card(cards, pending))


# --------------------------------------------------------------------------- decisions


def test_two_sponsors_approve_prod_and_a_deployment_is_queued(studio: Studio) -> None:
    request_id = _request(studio, V3, "prod", model="quorum-model")
    with signed_in(studio, "sponsor1"):
        first = cb.decide(studio.actor("sponsor1"), "approve", request_id, "looks good", _binding(V3))
        again = cb.decide(studio.actor("sponsor1"), "approve", request_id, "", _binding(V3))
    assert first.color == "success" and "1 of 2" in first.children
    assert again.color == "warning" and "already approved" in again.children
    with signed_in(studio, "sponsor2"):
        second = cb.decide(studio.actor("sponsor2"), "approve", request_id, "", _binding(V3))
        cards = cb.show_requests("credit-risk", "prod", "approved")
    assert second.color == "success" and "deployment" in second.children and "queued" in second.children
    assert _count(studio, Deployment, Deployment.request_id == request_id) == 1
    card = shown(_card(cards, request_id))
    assert "approved" in card and "2 of 2 required" in card
    assert any(line.startswith("deployment ") and line.endswith(" queued") for line in card)
    assert any("sponsor1 on" in line and line.endswith(": looks good") for line in card)
    with signed_in(studio, "sponsor2"):
        closed = cb.decide(studio.actor("sponsor2"), "reject", request_id, "too late", None)
    assert closed.color == "warning" and "is approved, not pending" in closed.children


def test_job_refusals_are_clear_messages(studio: Studio) -> None:
    request_id = _request(studio, V3, "staging", model="refusal-model")
    with signed_in(studio, "sponsor1"):
        no_comment = cb.decide(studio.actor("sponsor1"), "reject", request_id, "  ", None)
        wrong = cb.decide(studio.actor("sponsor1"), "approve", request_id, "", _binding(V5))
        forged = cb.decide(studio.actor("sponsor1"), "approve", request_id, "", "not a binding")
    assert no_comment.color == "warning" and "rejection comment is required" in no_comment.children
    assert wrong.color == "warning" and "A new version needs a new request" in wrong.children
    assert forged.color == "warning" and "must be" in forged.children
    with signed_in(studio, "mlengineer"):
        refused = cb.decide(studio.actor("mlengineer"), "approve", request_id, "", _binding(V3))
    assert refused.color == "danger" and refused.children.startswith("Refused: mlengineer may not")
    with signed_in(studio, "sponsor1"):
        rejected = cb.decide(studio.actor("sponsor1"), "reject", request_id, "drift on income", None)
    assert rejected.color == "success"
    assert _count(studio, AuditEntry, AuditEntry.action == "promotion.rejected") >= 1


def test_decision_callback_reads_the_clicked_card_only(studio: Studio) -> None:
    request_id = _request(studio, V3, "staging", model="click-model")
    other = {"type": cb.ID.COMMENT_TYPE, "request": request_id + 1000}
    mine = {"type": cb.ID.COMMENT_TYPE, "request": request_id}
    binding = {"type": cb.ID.BINDING_TYPE, "request": request_id}
    client = studio.signed_in("sponsor1", "10.41.0.1")
    body = callback_request(
        DECISION_OUTPUT,
        [
            {"id": "approvals-message", "property": "children"},
            {"id": "approvals-decided", "property": "data"},
        ],
        [
            [{"id": {"type": cb.ID.APPROVE_TYPE, "request": request_id}, "property": "n_clicks", "value": 1}],
            [
                {
                    "id": {"type": cb.ID.REJECT_TYPE, "request": request_id},
                    "property": "n_clicks",
                    "value": None,
                }
            ],
        ],
        [
            json.dumps({"request": request_id, "type": cb.ID.APPROVE_TYPE}, separators=(",", ":"))
            + ".n_clicks"
        ],
    )
    body["state"] = [
        [
            {"id": other, "property": "value", "value": "wrong card"},
            {"id": mine, "property": "value", "value": "ok"},
        ],
        [{"id": other, "property": "id", "value": other}, {"id": mine, "property": "id", "value": mine}],
        [{"id": binding, "property": "data", "value": _binding(V3)}],
        [{"id": binding, "property": "id", "value": binding}],
        {"id": "approvals-decided", "property": "data", "value": 4},
    ]
    response = client.post("/_dash-update-component", json=body, headers=csrf_header(client))
    assert response.status_code == 200, response.text
    answer = response.get_json()["response"]
    assert answer["approvals-decided"]["data"] == 5
    assert "approved (1 of 1); deployment" in answer["approvals-message"]["children"]["props"]["children"]
    with studio.db() as session:
        stored = session.get(PromotionRequest, request_id)
        assert stored.status == "approved" and stored.approvals[0].comment == "ok"
    # A user without APPROVE_PROMOTION is refused by the guard before anything runs.
    engineer = studio.signed_in("mlengineer", "10.41.0.2")
    assert (
        engineer.post("/_dash-update-component", json=body, headers=csrf_header(engineer)).status_code == 403
    )


# --------------------------------------------------------------------------- new requests


def test_promotion_requests_go_through_the_job(studio: Studio) -> None:
    with signed_in(studio, "sponsor1"), pytest.raises(PreventUpdate):
        cb.request_clicked(1, "credit-risk", "credit-default", "3", "staging", "why", False, 0)
    with signed_in(studio, "mlengineer"):
        missing = cb.request_promotion(
            studio.actor("mlengineer"), "credit-risk", "credit-default", "99", "staging", "why", False
        )
        no_reason = cb.request_promotion(
            studio.actor("mlengineer"), "credit-risk", "credit-default", "3", "staging", " ", False
        )
        other = cb.request_promotion(
            studio.actor("mlengineer"), "hidden-project", "credit-default", "3", "staging", "why", False
        )
    assert missing.color == "warning"  # the registry does not know the version
    assert no_reason.color == "warning" and "justification is required" in no_reason.children
    assert other.color == "danger" and "may not request_promotion" in other.children

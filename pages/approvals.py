"""Approvals: promotion requests and sponsor decisions.

A sponsor's inbox: every promotion request the user may see (pending first), each
with the evidence monitoring gathered about the candidate and the version it would
replace, the approvals it has and needs, and, for sponsors who may decide it, an
approve / reject form. Users who may request promotions get a form for that too.
The forms are filled and revealed by ``callbacks/approvals.py``; the jobs decide.
"""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import dcc, html

from app.components import page_header

NAME = "Approvals"
DESCRIPTION = "Requests to promote a model version to staging or production, and the sponsors' decisions."
ENVIRONMENTS = ("dev", "staging", "prod")
ANY = "all"  # filter value meaning "do not filter" (a Select shows an empty value as blank)
STATUSES = ("pending", "approved", "rejected", "expired", "superseded")

# Component ids shared with callbacks/approvals.py (pages may not import callbacks).
PROJECT = "approvals-project"
ENVIRONMENT = "approvals-environment"
STATUS = "approvals-status"
LIST = "approvals-list"
MESSAGE = "approvals-message"
DECIDED = "approvals-decided"
REQUESTED = "approvals-requested"
REQUEST_CARD = "approvals-request-card"
REQUEST_PROJECT = "approvals-request-project"
REQUEST_MODEL = "approvals-request-model"
REQUEST_VERSION = "approvals-request-version"
REQUEST_ENVIRONMENT = "approvals-request-environment"
REQUEST_JUSTIFICATION = "approvals-request-justification"
REQUEST_SUPERSEDE = "approvals-request-supersede"
REQUEST_SUBMIT = "approvals-request-submit"
REQUEST_MESSAGE = "approvals-request-message"
# Types of the pattern-matching ids of each request card's decision form.
APPROVE_TYPE = "approvals-approve"
REJECT_TYPE = "approvals-reject"
COMMENT_TYPE = "approvals-comment"
BINDING_TYPE = "approvals-binding"


def _choice(label: str, component_id: str, options: list[dict[str, str]], value: str, width: int) -> dbc.Col:
    return dbc.Col(
        [
            dbc.Label(label, html_for=component_id, class_name="small mb-1"),
            dbc.Select(id=component_id, options=options, value=value),
        ],
        md=width,
    )


def _filters() -> dbc.Row:
    return dbc.Row(
        [
            _choice("Project", PROJECT, [{"label": "All projects", "value": ANY}], ANY, 4),
            _choice(
                "Environment",
                ENVIRONMENT,
                [{"label": "All environments", "value": ANY}]
                + [{"label": e, "value": e} for e in ENVIRONMENTS],
                ANY,
                3,
            ),
            _choice(
                "Status",
                STATUS,
                [{"label": "All statuses", "value": ANY}] + [{"label": s, "value": s} for s in STATUSES],
                ANY,
                3,
            ),
        ],
        class_name="g-2 mb-3",
    )


def _request_form() -> dbc.Card:
    def field(label: str, control: object, component_id: str, width: int) -> dbc.Col:
        return dbc.Col([dbc.Label(label, html_for=component_id, class_name="small mb-1"), control], md=width)

    return dbc.Card(
        [
            dbc.CardHeader("Request a promotion"),
            dbc.CardBody(
                [
                    dbc.Row(
                        [
                            field("Project", dbc.Select(id=REQUEST_PROJECT, options=[]), REQUEST_PROJECT, 3),
                            field(
                                "Model",
                                dbc.Input(id=REQUEST_MODEL, maxLength=128, placeholder="credit-default"),
                                REQUEST_MODEL,
                                3,
                            ),
                            field(
                                "Version",
                                dbc.Input(id=REQUEST_VERSION, maxLength=32, placeholder="3"),
                                REQUEST_VERSION,
                                2,
                            ),
                            field(
                                "Environment",
                                dbc.Select(
                                    id=REQUEST_ENVIRONMENT,
                                    options=[{"label": e, "value": e} for e in ENVIRONMENTS],
                                    value="staging",
                                ),
                                REQUEST_ENVIRONMENT,
                                2,
                            ),
                        ],
                        class_name="g-2 mb-2",
                    ),
                    dbc.Label("Justification", html_for=REQUEST_JUSTIFICATION, class_name="small mb-1"),
                    dbc.Textarea(id=REQUEST_JUSTIFICATION, maxLength=5000, rows=2, class_name="mb-2"),
                    dbc.Checkbox(
                        id=REQUEST_SUPERSEDE,
                        label="Replace a pending request for the same model and environment",
                        value=False,
                        class_name="mb-2",
                    ),
                    dbc.Button("Request promotion", id=REQUEST_SUBMIT, color="primary", class_name="mb-2"),
                    html.Div(id=REQUEST_MESSAGE),
                ]
            ),
        ],
        id=REQUEST_CARD,
        class_name="mb-3",
        style={"display": "none"},
    )


def layout() -> html.Div:
    """Filters, the request form (revealed to those who may request) and the list of requests."""
    return html.Div(
        [
            page_header(NAME, DESCRIPTION),
            dcc.Store(id=DECIDED, data=0),
            dcc.Store(id=REQUESTED, data=0),
            _request_form(),
            _filters(),
            html.Div(id=MESSAGE),
            dcc.Loading(html.Div(id=LIST), type="default"),
        ]
    )


dash.register_page(
    __name__,
    path="/approvals",
    name=NAME,
    title=f"{NAME} · Model Monitoring Studio",
    order=5,
    permission="view_approvals",
    layout=layout,
)

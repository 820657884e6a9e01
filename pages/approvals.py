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
from app.components.ids.approvals import ANY, ID

NAME = "Approvals"
DESCRIPTION = "Requests to promote a model version to staging or production, and the sponsors' decisions."
ENVIRONMENTS = ("dev", "staging", "prod")
STATUSES = ("pending", "approved", "rejected", "expired", "superseded")


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
            _choice("Project", ID.PROJECT, [{"label": "All projects", "value": ANY}], ANY, 4),
            _choice(
                "Environment",
                ID.ENVIRONMENT,
                [{"label": "All environments", "value": ANY}]
                + [{"label": e, "value": e} for e in ENVIRONMENTS],
                ANY,
                3,
            ),
            _choice(
                "Status",
                ID.STATUS,
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
                            field(
                                "Project",
                                dbc.Select(id=ID.REQUEST_PROJECT, options=[]),
                                ID.REQUEST_PROJECT,
                                3,
                            ),
                            field(
                                "Model",
                                dbc.Input(id=ID.REQUEST_MODEL, maxLength=128, placeholder="credit-default"),
                                ID.REQUEST_MODEL,
                                3,
                            ),
                            field(
                                "Version",
                                dbc.Input(id=ID.REQUEST_VERSION, maxLength=32, placeholder="3"),
                                ID.REQUEST_VERSION,
                                2,
                            ),
                            field(
                                "Environment",
                                dbc.Select(
                                    id=ID.REQUEST_ENVIRONMENT,
                                    options=[{"label": e, "value": e} for e in ENVIRONMENTS],
                                    value="staging",
                                ),
                                ID.REQUEST_ENVIRONMENT,
                                2,
                            ),
                        ],
                        class_name="g-2 mb-2",
                    ),
                    dbc.Label("Justification", html_for=ID.REQUEST_JUSTIFICATION, class_name="small mb-1"),
                    dbc.Textarea(id=ID.REQUEST_JUSTIFICATION, maxLength=5000, rows=2, class_name="mb-2"),
                    dbc.Checkbox(
                        id=ID.REQUEST_SUPERSEDE,
                        label="Replace a pending request for the same model and environment",
                        value=False,
                        class_name="mb-2",
                    ),
                    dbc.Button("Request promotion", id=ID.REQUEST_SUBMIT, color="primary", class_name="mb-2"),
                    html.Div(id=ID.REQUEST_MESSAGE),
                ]
            ),
        ],
        id=ID.REQUEST_CARD,
        class_name="mb-3",
        style={"display": "none"},
    )


def layout() -> html.Div:
    """Filters, the request form (revealed to those who may request) and the list of requests."""
    return html.Div(
        [
            page_header(NAME, DESCRIPTION),
            dcc.Store(id=ID.DECIDED, data=0),
            dcc.Store(id=ID.REQUESTED, data=0),
            _request_form(),
            _filters(),
            html.Div(id=ID.MESSAGE),
            dcc.Loading(html.Div(id=ID.LIST), type="default"),
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

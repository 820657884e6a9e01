"""Admin: user accounts, roles per project, alert rules and thresholds, and the studio's settings."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import dcc, html

from app.auth import current_actor
from app.components import page_header
from callbacks import admin as cb
from callbacks.projects import ROLE_OPTIONS
from jobs.db.alerting import ALERT_SEVERITIES, RULE_KINDS, RULE_OPERATORS
from jobs.db.models import ENVIRONMENT_NAMES
from jobs.permissions import Permission, has_permission

NAME = "Admin"
DESCRIPTION = "User accounts, their roles per project, alert rules and thresholds, and the studio's settings."


def _field(label: str, control: object, width: int = 3) -> dbc.Col:
    return dbc.Col([dbc.Label(label, class_name="small mb-0"), control], md=width)


def _options(values: tuple[str, ...]) -> list[dict[str, str]]:
    return [{"label": value, "value": value} for value in values]


def _users_section() -> html.Section:
    create = dbc.Row(
        [
            _field("Username", dbc.Input(id=cb.NEW_USERNAME, size="sm", maxLength=64, autoComplete="off")),
            _field("Display name", dbc.Input(id=cb.NEW_DISPLAY_NAME, size="sm", maxLength=128), width=2),
            _field(
                "Password (10+ characters)",
                dbc.Input(
                    id=cb.NEW_PASSWORD,
                    type="password",
                    size="sm",
                    maxLength=1024,
                    autoComplete="new-password",
                ),
            ),
            dbc.Col(
                dbc.Checkbox(id=cb.NEW_IS_ADMIN, label="Administrator", value=False), md=1, class_name="mt-4"
            ),
            dbc.Col(
                dbc.Button("Create account", id=cb.CREATE_USER, size="sm", color="primary"),
                md=2,
                class_name="mt-4",
            ),
        ],
        class_name="g-2 mb-2",
    )
    account = dbc.Row(
        [
            _field("Account", dbc.Select(id=cb.ACCOUNT_USER, options=[], size="sm", placeholder="Choose an account"), width=4),
            dbc.Col(
                html.Div(
                    [
                        dbc.Button("Activate", id=cb.ACTIVATE, size="sm", color="outline-success"),
                        dbc.Button("Deactivate", id=cb.DEACTIVATE, size="sm", color="outline-danger"),
                    ],
                    className="d-flex gap-2",
                ),
                md=4,
                class_name="mt-4",
            ),
        ],
        class_name="g-2 mb-2",
    )
    return html.Section(
        [
            html.H2("Users", className="h5"),
            html.Div(id=cb.USERS_TABLE),
            create,
            account,
            html.Div(id=cb.USER_MESSAGE),
        ],
        className="mb-4",
    )


def _roles_section() -> html.Section:
    form = dbc.Row(
        [
            _field("User", dbc.Select(id=cb.ROLE_USER, options=[], size="sm", placeholder="Choose a user")),
            _field("Project", dbc.Select(id=cb.ROLE_PROJECT, options=[], size="sm", placeholder="Choose a project")),
            _field("Role", dbc.Select(id=cb.ROLE_ROLE, options=ROLE_OPTIONS, size="sm", placeholder="Choose a role")),
            dbc.Col(
                html.Div(
                    [
                        dbc.Button("Grant", id=cb.GRANT, size="sm", color="primary"),
                        dbc.Button("Revoke", id=cb.REVOKE, size="sm", color="outline-danger"),
                    ],
                    className="d-flex gap-2",
                ),
                md=3,
                class_name="mt-4",
            ),
        ],
        class_name="g-2 mb-2",
    )
    return html.Section(
        [
            html.H2("Roles per project", className="h5"),
            html.Div(id=cb.ROLES_TABLE),
            form,
            html.Div(id=cb.ROLE_MESSAGE),
        ],
        className="mb-4",
    )


def _rules_section() -> html.Section:
    create = dbc.Row(
        [
            _field("Name", dbc.Input(id=cb.RULE_NAME, size="sm", maxLength=128), 2),
            _field("Model", dbc.Input(id=cb.RULE_MODEL, size="sm", maxLength=128), 2),
            _field(
                "Kind",
                dbc.Select(id=cb.RULE_KIND, options=_options(RULE_KINDS), value="threshold", size="sm"),
                2,
            ),
            _field("Metric", dbc.Input(id=cb.RULE_METRIC, size="sm", placeholder="psi", maxLength=64), 2),
            _field("Column (empty: all)", dbc.Input(id=cb.RULE_COLUMN, size="sm", maxLength=128), 2),
            _field(
                "Operator",
                dbc.Select(id=cb.RULE_OPERATOR, options=_options(RULE_OPERATORS), value=">", size="sm"),
                2,
            ),
            _field("Threshold", dbc.Input(id=cb.RULE_THRESHOLD, size="sm", inputMode="decimal"), 2),
            _field(
                "Consecutive windows",
                dbc.Input(id=cb.RULE_WINDOWS, size="sm", value="1", inputMode="numeric"),
                2,
            ),
            _field(
                "Max age (hours, freshness)", dbc.Input(id=cb.RULE_MAX_AGE, size="sm", inputMode="decimal"), 2
            ),
            _field(
                "Severity",
                dbc.Select(
                    id=cb.RULE_SEVERITY, options=_options(ALERT_SEVERITIES), value="warning", size="sm"
                ),
                2,
            ),
            _field(
                "Environment",
                dbc.Select(
                    id=cb.RULE_ENVIRONMENT,
                    options=[{"label": "all", "value": ""}, *_options(ENVIRONMENT_NAMES)],
                    value="",
                    size="sm",
                ),
                2,
            ),
            dbc.Col(
                dbc.Button("Create rule", id=cb.CREATE_RULE, size="sm", color="primary"),
                md=2,
                class_name="mt-4",
            ),
        ],
        class_name="g-2 mb-3",
    )
    change = dbc.Row(
        [
            _field("Rule", dbc.Select(id=cb.RULE_SELECT, options=[], size="sm", placeholder="Choose a rule"), 4),
            _field("New threshold", dbc.Input(id=cb.RULE_NEW_THRESHOLD, size="sm", inputMode="decimal"), 2),
            dbc.Col(
                html.Div(
                    [
                        dbc.Button("Set threshold", id=cb.UPDATE_THRESHOLD, size="sm", color="primary"),
                        dbc.Button("Enable", id=cb.ENABLE_RULE, size="sm", color="outline-success"),
                        dbc.Button("Disable", id=cb.DISABLE_RULE, size="sm", color="outline-danger"),
                    ],
                    className="d-flex gap-2",
                ),
                md=6,
                class_name="mt-4",
            ),
        ],
        class_name="g-2 mb-2",
    )
    return html.Section(
        [
            html.H2("Alert rules and thresholds", className="h5"),
            dbc.Select(
                id=cb.RULES_PROJECT, options=[], size="sm", class_name="mb-2", style={"maxWidth": "28rem"}
            ),
            html.Div(id=cb.RULES_TABLE),
            create,
            change,
            html.Div(id=cb.RULE_MESSAGE),
        ],
        className="mb-4",
    )


def layout() -> html.Div:
    """The sections the administrator's permissions open."""
    actor = current_actor()
    sections = [page_header(NAME, DESCRIPTION), dcc.Store(id=cb.REFRESH, data=0), _users_section()]
    if has_permission(actor, Permission.MANAGE_MEMBERS):
        sections.append(_roles_section())
    else:
        sections.append(dbc.Input(id=cb.ROLE_USER, type="hidden"))
    if has_permission(actor, Permission.MANAGE_ALERT_RULES):
        sections.append(_rules_section())
    if has_permission(actor, Permission.ADMIN_SETTINGS):
        sections.append(
            html.Section(
                [html.H2("Settings (read-only)", className="h5"), html.Div(id=cb.SETTINGS_TABLE)],
                className="mb-4",
            )
        )
    return html.Div(sections)


dash.register_page(
    __name__,
    path="/admin",
    name=NAME,
    title=f"{NAME} · Model Monitoring Studio",
    order=8,
    permission="admin_users",
    layout=layout,
)

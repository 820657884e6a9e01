"""Admin: user accounts, roles per project, alert rules and thresholds, and the studio's settings."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import dcc, html

from app.components import page_header
from app.components.ids.admin import ID

NAME = "Admin"
DESCRIPTION = "User accounts, their roles per project, alert rules and thresholds, and the studio's settings."


def _field(label: str, control: object, width: int = 3) -> dbc.Col:
    return dbc.Col([dbc.Label(label, class_name="small mb-0"), control], md=width)


def _form_row(*columns: dbc.Col) -> dbc.Row:
    return dbc.Row(list(columns), class_name="g-2 mb-2")


def _section(title: str, *children: object) -> html.Section:
    return html.Section([html.H2(title, className="h5"), *children], className="mb-4")


def _buttons(width: int, *buttons: dbc.Button) -> dbc.Col:
    """A form row's column of buttons, level with the inputs below their labels."""
    if len(buttons) == 1:
        return dbc.Col(buttons[0], md=width, class_name="mt-4")
    return dbc.Col(html.Div(list(buttons), className="d-flex gap-2"), md=width, class_name="mt-4")


def _users_section() -> html.Section:
    create = _form_row(
        _field("Username", dbc.Input(id=ID.NEW_USERNAME, size="sm", maxLength=64, autoComplete="off")),
        _field("Display name", dbc.Input(id=ID.NEW_DISPLAY_NAME, size="sm", maxLength=128), width=2),
        _field(
            "Password (10+ characters)",
            dbc.Input(
                id=ID.NEW_PASSWORD,
                type="password",
                size="sm",
                maxLength=1024,
                autoComplete="new-password",
            ),
        ),
        dbc.Col(
            dbc.Checkbox(id=ID.NEW_IS_ADMIN, label="Administrator", value=False), md=2, class_name="mt-4"
        ),
        _buttons(2, dbc.Button("Create account", id=ID.CREATE_USER, size="sm", color="primary")),
    )
    account = _form_row(
        _field(
            "Account",
            dbc.Select(id=ID.ACCOUNT_USER, options=[], size="sm", placeholder="Choose an account"),
            width=4,
        ),
        _buttons(
            4,
            dbc.Button("Activate", id=ID.ACTIVATE, size="sm", color="outline-success"),
            dbc.Button("Deactivate", id=ID.DEACTIVATE, size="sm", color="outline-danger"),
        ),
    )
    return _section(
        "Users",
        html.Div(id=ID.USERS_TABLE),
        create,
        account,
        html.Div(id=ID.USER_MESSAGE),
    )


def _roles_section() -> html.Section:
    form = _form_row(
        _field("User", dbc.Select(id=ID.ROLE_USER, options=[], size="sm", placeholder="Choose a user")),
        _field(
            "Project",
            dbc.Select(id=ID.ROLE_PROJECT, options=[], size="sm", placeholder="Choose a project"),
        ),
        _field(
            "Role",
            dbc.Select(id=ID.ROLE_ROLE, options=[], size="sm", placeholder="Choose a role"),
        ),
        _buttons(
            3,
            dbc.Button("Grant", id=ID.GRANT, size="sm", color="primary"),
            dbc.Button("Revoke", id=ID.REVOKE, size="sm", color="outline-danger"),
        ),
    )
    return _section(
        "Roles per project",
        html.Div(id=ID.ROLES_TABLE),
        form,
        html.Div(id=ID.ROLE_MESSAGE),
    )


def _rules_section() -> html.Section:
    create = dbc.Row(
        [
            _field("Name", dbc.Input(id=ID.RULE_NAME, size="sm", maxLength=128), 2),
            _field("Model", dbc.Input(id=ID.RULE_MODEL, size="sm", maxLength=128), 2),
            _field(
                "Kind",
                dbc.Select(id=ID.RULE_KIND, options=[], value="threshold", size="sm"),
                2,
            ),
            _field("Metric", dbc.Input(id=ID.RULE_METRIC, size="sm", placeholder="psi", maxLength=64), 2),
            _field("Column (empty: all)", dbc.Input(id=ID.RULE_COLUMN, size="sm", maxLength=128), 2),
            _field(
                "Operator",
                dbc.Select(id=ID.RULE_OPERATOR, options=[], value=">", size="sm"),
                2,
            ),
            _field("Threshold", dbc.Input(id=ID.RULE_THRESHOLD, size="sm", inputMode="decimal"), 2),
            _field(
                "Consecutive windows",
                dbc.Input(id=ID.RULE_WINDOWS, size="sm", value="1", inputMode="numeric"),
                2,
            ),
            _field(
                "Max age (hours, freshness)", dbc.Input(id=ID.RULE_MAX_AGE, size="sm", inputMode="decimal"), 2
            ),
            _field(
                "Severity",
                dbc.Select(id=ID.RULE_SEVERITY, options=[], value="warning", size="sm"),
                2,
            ),
            _field(
                "Environment",
                dbc.Select(
                    id=ID.RULE_ENVIRONMENT,
                    options=[],
                    value="",
                    size="sm",
                ),
                2,
            ),
            _buttons(2, dbc.Button("Create rule", id=ID.CREATE_RULE, size="sm", color="primary")),
        ],
        class_name="g-2 mb-3",
    )
    change = _form_row(
        _field("Rule", dbc.Select(id=ID.RULE_SELECT, options=[], size="sm", placeholder="Choose a rule"), 4),
        _field("New threshold", dbc.Input(id=ID.RULE_NEW_THRESHOLD, size="sm", inputMode="decimal"), 2),
        _buttons(
            6,
            dbc.Button("Set threshold", id=ID.UPDATE_THRESHOLD, size="sm", color="primary"),
            dbc.Button("Enable", id=ID.ENABLE_RULE, size="sm", color="outline-success"),
            dbc.Button("Disable", id=ID.DISABLE_RULE, size="sm", color="outline-danger"),
        ),
    )
    return _section(
        "Alert rules and thresholds",
        dbc.Select(
            id=ID.RULES_PROJECT, options=[], size="sm", class_name="mb-2", style={"maxWidth": "28rem"}
        ),
        html.Div(id=ID.RULES_TABLE),
        create,
        change,
        html.Div(id=ID.RULE_MESSAGE),
    )


def layout() -> html.Div:
    """Every section; those the administrator's permissions do not open stay hidden (see callbacks)."""
    settings = _section("Settings (read-only)", html.Div(id=ID.SETTINGS_TABLE))
    return html.Div(
        [
            page_header(NAME, DESCRIPTION),
            dcc.Store(id=ID.REFRESH, data=0),
            _users_section(),
            html.Div(_roles_section(), id=ID.ROLES_SECTION, hidden=True),
            html.Div(_rules_section(), id=ID.RULES_SECTION, hidden=True),
            html.Div(settings, id=ID.SETTINGS_SECTION, hidden=True),
        ]
    )


dash.register_page(
    __name__,
    path="/admin",
    name=NAME,
    title=f"{NAME} · Model Monitoring Studio",
    order=8,
    permission="admin_users",
    layout=layout,
)

"""Admin: user accounts, roles per project, alert rules and thresholds, and the studio's settings."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import dcc, html

from app.components import page_header

NAME = "Admin"
DESCRIPTION = "User accounts, their roles per project, alert rules and thresholds, and the studio's settings."


class ID:
    """Component ids shared with ``callbacks/admin.py`` (pages may not import callbacks)."""

    REFRESH = "admin-refresh"
    USERS_TABLE = "admin-users"
    NEW_USERNAME = "admin-new-username"
    NEW_DISPLAY_NAME = "admin-new-display-name"
    NEW_PASSWORD = "admin-new-password"  # noqa: S105 - a component id, not a password
    NEW_IS_ADMIN = "admin-new-is-admin"
    CREATE_USER = "admin-create-user"
    USER_MESSAGE = "admin-user-message"
    ACCOUNT_USER = "admin-account-user"
    ACTIVATE = "admin-activate"
    DEACTIVATE = "admin-deactivate"
    ROLES_TABLE = "admin-roles"
    ROLE_USER = "admin-role-user"
    ROLE_PROJECT = "admin-role-project"
    ROLE_ROLE = "admin-role-role"
    GRANT = "admin-role-grant"
    REVOKE = "admin-role-revoke"
    ROLE_MESSAGE = "admin-role-message"
    RULES_PROJECT = "admin-rules-project"
    RULES_TABLE = "admin-rules"
    RULE_NAME = "admin-rule-name"
    RULE_MODEL = "admin-rule-model"
    RULE_KIND = "admin-rule-kind"
    RULE_METRIC = "admin-rule-metric"
    RULE_COLUMN = "admin-rule-column"
    RULE_OPERATOR = "admin-rule-operator"
    RULE_THRESHOLD = "admin-rule-threshold"
    RULE_WINDOWS = "admin-rule-windows"
    RULE_MAX_AGE = "admin-rule-max-age"
    RULE_SEVERITY = "admin-rule-severity"
    RULE_ENVIRONMENT = "admin-rule-environment"
    CREATE_RULE = "admin-rule-create"
    RULE_SELECT = "admin-rule-select"
    RULE_NEW_THRESHOLD = "admin-rule-new-threshold"
    UPDATE_THRESHOLD = "admin-rule-update-threshold"
    ENABLE_RULE = "admin-rule-enable"
    DISABLE_RULE = "admin-rule-disable"
    RULE_MESSAGE = "admin-rule-message"
    SETTINGS_TABLE = "admin-settings"
    ROLES_SECTION = "admin-roles-section"
    RULES_SECTION = "admin-rules-section"
    SETTINGS_SECTION = "admin-settings-section"


def _field(label: str, control: object, width: int = 3) -> dbc.Col:
    return dbc.Col([dbc.Label(label, class_name="small mb-0"), control], md=width)


def _users_section() -> html.Section:
    create = dbc.Row(
        [
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
            dbc.Col(
                dbc.Button("Create account", id=ID.CREATE_USER, size="sm", color="primary"),
                md=2,
                class_name="mt-4",
            ),
        ],
        class_name="g-2 mb-2",
    )
    account = dbc.Row(
        [
            _field(
                "Account",
                dbc.Select(id=ID.ACCOUNT_USER, options=[], size="sm", placeholder="Choose an account"),
                width=4,
            ),
            dbc.Col(
                html.Div(
                    [
                        dbc.Button("Activate", id=ID.ACTIVATE, size="sm", color="outline-success"),
                        dbc.Button("Deactivate", id=ID.DEACTIVATE, size="sm", color="outline-danger"),
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
            html.Div(id=ID.USERS_TABLE),
            create,
            account,
            html.Div(id=ID.USER_MESSAGE),
        ],
        className="mb-4",
    )


def _roles_section() -> html.Section:
    form = dbc.Row(
        [
            _field("User", dbc.Select(id=ID.ROLE_USER, options=[], size="sm", placeholder="Choose a user")),
            _field(
                "Project",
                dbc.Select(id=ID.ROLE_PROJECT, options=[], size="sm", placeholder="Choose a project"),
            ),
            _field(
                "Role",
                dbc.Select(id=ID.ROLE_ROLE, options=[], size="sm", placeholder="Choose a role"),
            ),
            dbc.Col(
                html.Div(
                    [
                        dbc.Button("Grant", id=ID.GRANT, size="sm", color="primary"),
                        dbc.Button("Revoke", id=ID.REVOKE, size="sm", color="outline-danger"),
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
            html.Div(id=ID.ROLES_TABLE),
            form,
            html.Div(id=ID.ROLE_MESSAGE),
        ],
        className="mb-4",
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
            dbc.Col(
                dbc.Button("Create rule", id=ID.CREATE_RULE, size="sm", color="primary"),
                md=2,
                class_name="mt-4",
            ),
        ],
        class_name="g-2 mb-3",
    )
    change = dbc.Row(
        [
            _field(
                "Rule", dbc.Select(id=ID.RULE_SELECT, options=[], size="sm", placeholder="Choose a rule"), 4
            ),
            _field("New threshold", dbc.Input(id=ID.RULE_NEW_THRESHOLD, size="sm", inputMode="decimal"), 2),
            dbc.Col(
                html.Div(
                    [
                        dbc.Button("Set threshold", id=ID.UPDATE_THRESHOLD, size="sm", color="primary"),
                        dbc.Button("Enable", id=ID.ENABLE_RULE, size="sm", color="outline-success"),
                        dbc.Button("Disable", id=ID.DISABLE_RULE, size="sm", color="outline-danger"),
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
                id=ID.RULES_PROJECT, options=[], size="sm", class_name="mb-2", style={"maxWidth": "28rem"}
            ),
            html.Div(id=ID.RULES_TABLE),
            create,
            change,
            html.Div(id=ID.RULE_MESSAGE),
        ],
        className="mb-4",
    )


def layout() -> html.Div:
    """Every section; those the administrator's permissions do not open stay hidden (see callbacks)."""
    settings = html.Section(
        [html.H2("Settings (read-only)", className="h5"), html.Div(id=ID.SETTINGS_TABLE)], className="mb-4"
    )
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

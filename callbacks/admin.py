"""Admin page callbacks: user accounts, roles per project, alert rules and the settings view.

* Users (``ADMIN_USERS``): list, create (optionally as administrator), activate and
  deactivate through :mod:`jobs.users`.
* Roles per project (``MANAGE_MEMBERS`` on the project): grant and revoke, the same
  buttons as the Projects page (:func:`app.components.roles.role_change_callbacks`
  around :func:`callbacks.projects.change_membership`).
* Alert rules (``MANAGE_ALERT_RULES`` on the project): list, create, change the
  threshold, enable and disable through :mod:`jobs.alerts`.
* Settings (``ADMIN_SETTINGS``): read-only; secrets show as "set (hidden)" and URLs
  with their password masked.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, html
from dash.exceptions import PreventUpdate
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth import current_actor, db_session, services
from app.components.ids.admin import ID
from app.components.roles import RoleForm, role_change_callbacks
from app.rbac import requires
from callbacks.projects import (
    ROLE_OPTIONS,
    change_membership,
    notice,
    project_choice,
    project_options,
    refresh_after,
    role_names,
    run_change,
)
from jobs.alerts import RuleSpec, create_rule, list_rules, update_rule
from jobs.db.alerting import ALERT_SEVERITIES, RULE_KINDS, RULE_OPERATORS
from jobs.db.models import ENVIRONMENT_NAMES, Membership, Project, User
from jobs.integrations import MASK, github_config, redact_url
from jobs.permissions import Actor, Permission, has_permission
from jobs.users import InvalidInput, create_user, set_user_active

SECRET_SETTINGS = frozenset({"secret_key", "s3_secret_access_key", "s3_session_token"})
URL_SETTINGS = frozenset(
    {
        "database_url",
        "mlflow_tracking_uri",
        "mlflow_registry_uri",
        "redis_url",
        "celery_broker_url",
        "s3_endpoint_url",
        "data_uri",
    }
)
PARTLY_SHOWN_SETTINGS = frozenset({"s3_access_key_id"})


# ---------------------------------------------------------------------------- the page's frame


def _options(values: tuple[str, ...] | list[str]) -> list[dict[str, str]]:
    return [{"label": value, "value": value} for value in values]


@dash.callback(
    Output(ID.ROLES_SECTION, "hidden"),
    Output(ID.RULES_SECTION, "hidden"),
    Output(ID.SETTINGS_SECTION, "hidden"),
    Output(ID.ROLE_ROLE, "options"),
    Output(ID.RULE_KIND, "options"),
    Output(ID.RULE_OPERATOR, "options"),
    Output(ID.RULE_SEVERITY, "options"),
    Output(ID.RULE_ENVIRONMENT, "options"),
    Input(ID.ROLES_SECTION, "id"),
)
@requires(Permission.ADMIN_USERS)
def page_sections(_component_id: str) -> tuple[Any, ...]:
    """Reveal the sections the user's permissions open, and fill the fixed choices of the forms."""
    actor = current_actor()
    return (
        not has_permission(actor, Permission.MANAGE_MEMBERS),
        not has_permission(actor, Permission.MANAGE_ALERT_RULES),
        not has_permission(actor, Permission.ADMIN_SETTINGS),
        ROLE_OPTIONS,
        _options(RULE_KINDS),
        _options(RULE_OPERATORS),
        _options(ALERT_SEVERITIES),
        [{"label": "all", "value": ""}, *_options(ENVIRONMENT_NAMES)],
    )


# ---------------------------------------------------------------------------- users


def _user_rows(db: Session) -> list[tuple[User, dict[str, list[str]]]]:
    users = list(db.scalars(select(User).order_by(User.username)))
    roles: dict[int, dict[str, list[str]]] = {}
    for user_id, slug, role in db.execute(
        select(Membership.user_id, Project.slug, Membership.role)
        .join(Project, Project.id == Membership.project_id)
        .order_by(Project.slug, Membership.role)
    ):
        roles.setdefault(user_id, {}).setdefault(slug, []).append(role)
    return [(user, roles.get(user.id, {})) for user in users]


@dash.callback(
    Output(ID.USERS_TABLE, "children"),
    Output(ID.ACCOUNT_USER, "options"),
    Output(ID.ROLE_USER, "options"),
    Input(ID.USERS_TABLE, "id"),
    Input(ID.REFRESH, "data"),
)
@requires(Permission.ADMIN_USERS)
def show_users(
    _component_id: str, _refresh: int | None = None
) -> tuple[Any, list[dict[str, str]], list[dict[str, str]]]:
    """Every account: name, state, administrator flag, last sign-in and roles per project."""
    with db_session() as db:
        rows = _user_rows(db)
        body = [
            html.Tr(
                [
                    html.Td(user.username),
                    html.Td(user.display_name),
                    html.Td("active" if user.is_active else "deactivated"),
                    html.Td("yes" if user.is_admin else "no"),
                    html.Td(
                        user.last_login_at.strftime("%Y-%m-%d %H:%M UTC") if user.last_login_at else "never"
                    ),
                ],
                id=f"admin-user-row-{user.username}",
            )
            for user, _roles in rows
        ]
        options = [
            {"label": f"{user.display_name} ({user.username})", "value": user.username} for user, _ in rows
        ]
    header = html.Thead(
        html.Tr([html.Th(t) for t in ("Username", "Name", "Account", "Administrator", "Last sign-in")])
    )
    table = dbc.Table([header, html.Tbody(body)], size="sm", hover=True, id="admin-users-table")
    return table, options, options


@dash.callback(
    Output(ID.USER_MESSAGE, "children"),
    Output(ID.REFRESH, "data", allow_duplicate=True),
    Input(ID.CREATE_USER, "n_clicks"),
    State(ID.NEW_USERNAME, "value"),
    State(ID.NEW_DISPLAY_NAME, "value"),
    State(ID.NEW_PASSWORD, "value"),
    State(ID.NEW_IS_ADMIN, "value"),
    State(ID.REFRESH, "data"),
    prevent_initial_call=True,
)
@requires(Permission.ADMIN_USERS)
def create_user_clicked(
    n_clicks: int | None,
    username: str | None,
    display_name: str | None,
    password: str | None,
    is_admin: bool | None,
    refresh: int | None,
) -> tuple[dbc.Alert, int]:
    """Create an account (an administrator when the box is ticked)."""
    if not n_clicks:
        raise PreventUpdate

    def change(db: Session, actor: Actor) -> str:
        user = create_user(
            db,
            actor,
            (username or "").strip(),
            password or "",
            display_name=(display_name or "").strip(),
            is_admin=bool(is_admin),
        )
        return f"Account {user.username} created{' as an administrator' if user.is_admin else ''}."

    outcome = run_change(change)
    return outcome, refresh_after(outcome, refresh)


def _set_active(username: str | None, active: bool) -> dbc.Alert:
    if not username:
        return notice("warning", "Choose an account first.")

    def change(db: Session, actor: Actor) -> str:
        user = set_user_active(db, actor, username, active)
        return f"Account {user.username} is {'active' if user.is_active else 'deactivated'}."

    return run_change(change)


@dash.callback(
    Output(ID.USER_MESSAGE, "children", allow_duplicate=True),
    Output(ID.REFRESH, "data", allow_duplicate=True),
    Input(ID.ACTIVATE, "n_clicks"),
    State(ID.ACCOUNT_USER, "value"),
    State(ID.REFRESH, "data"),
    prevent_initial_call=True,
)
@requires(Permission.ADMIN_USERS)
def activate_clicked(
    n_clicks: int | None, username: str | None, refresh: int | None
) -> tuple[dbc.Alert, int]:
    """Let the chosen account sign in again."""
    if not n_clicks:
        raise PreventUpdate
    outcome = _set_active(username, True)
    return outcome, refresh_after(outcome, refresh)


@dash.callback(
    Output(ID.USER_MESSAGE, "children", allow_duplicate=True),
    Output(ID.REFRESH, "data", allow_duplicate=True),
    Input(ID.DEACTIVATE, "n_clicks"),
    State(ID.ACCOUNT_USER, "value"),
    State(ID.REFRESH, "data"),
    prevent_initial_call=True,
)
@requires(Permission.ADMIN_USERS)
def deactivate_clicked(
    n_clicks: int | None, username: str | None, refresh: int | None
) -> tuple[dbc.Alert, int]:
    """Stop the chosen account from signing in (its next request is refused too)."""
    if not n_clicks:
        raise PreventUpdate
    outcome = _set_active(username, False)
    return outcome, refresh_after(outcome, refresh)


# ---------------------------------------------------------------------------- roles per project


@dash.callback(
    Output(ID.ROLES_TABLE, "children"),
    Output(ID.ROLE_PROJECT, "options"),
    Input(ID.ROLES_TABLE, "id"),
    Input(ID.REFRESH, "data"),
)
@requires(Permission.MANAGE_MEMBERS)
def show_roles(_component_id: str, _refresh: int | None = None) -> tuple[Any, list[dict[str, str]]]:
    """Users x projects: the roles each user holds on each project the viewer manages."""
    options = project_options(Permission.MANAGE_MEMBERS)
    slugs = [option["value"] for option in options]
    with db_session() as db:
        rows = _user_rows(db)
    header = html.Thead(html.Tr([html.Th("User"), *(html.Th(slug) for slug in slugs)]))
    body = [
        html.Tr(
            [html.Td(user.username), *(html.Td(role_names(roles.get(slug, [])) or "—") for slug in slugs)]
        )
        for user, roles in rows
        if not user.is_admin or roles
    ]
    table = dbc.Table(
        [header, html.Tbody(body)], size="sm", hover=True, responsive=True, id="admin-roles-table"
    )
    return table, options


grant_clicked, revoke_clicked = role_change_callbacks(
    RoleForm(
        grant=ID.GRANT,
        revoke=ID.REVOKE,
        project=ID.ROLE_PROJECT,
        user=ID.ROLE_USER,
        role=ID.ROLE_ROLE,
        message=ID.ROLE_MESSAGE,
        refresh=ID.REFRESH,
    ),
    change_membership,
    refresh_after,
    module=__name__,
)


# ---------------------------------------------------------------------------- alert rules


def _number(text: Any, what: str, *, integer: bool = False) -> float | int | None:
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    try:
        value = int(str(text).strip(), 10) if integer else float(str(text).strip())
    except ValueError:
        raise InvalidInput(f"{what} must be a {'whole number' if integer else 'number'}") from None
    if not integer and not math.isfinite(value):
        raise InvalidInput(f"{what} must be a finite number")
    return value


def _text(value: Any) -> str | None:
    return str(value).strip() or None if value is not None else None


def _rule_text(rule: Any) -> tuple[str, str]:
    if rule.kind == "freshness":
        return "freshness", f"no traffic for {rule.max_age_hours:g} h"
    column = rule.column_name or "every column"
    if rule.operator == "drifted":
        return rule.metric or "", f"{column} drifted"
    return rule.metric or "", f"{column} {rule.operator} {rule.threshold:g}"


@dash.callback(
    Output(ID.RULES_PROJECT, "options"),
    Output(ID.RULES_PROJECT, "value"),
    Input(ID.RULES_PROJECT, "id"),
    State(ID.RULES_PROJECT, "value"),
)
@requires(Permission.MANAGE_ALERT_RULES)
def list_rule_projects(_component_id: str, selected: str | None) -> tuple[list[dict[str, str]], str | None]:
    """Projects whose alert rules the user manages."""
    return project_choice(Permission.MANAGE_ALERT_RULES, selected)


@dash.callback(
    Output(ID.RULES_TABLE, "children"),
    Output(ID.RULE_SELECT, "options"),
    Input(ID.RULES_PROJECT, "value"),
    Input(ID.REFRESH, "data"),
)
@requires(Permission.MANAGE_ALERT_RULES)
def show_rules(project: str | None, _refresh: int | None = None) -> tuple[Any, list[dict[str, str]]]:
    """The alert rules of the project and their thresholds.

    Raises:
        PreventUpdate: without a project, or for one the user does not manage rules of.
    """
    if not project or not has_permission(current_actor(), Permission.MANAGE_ALERT_RULES, project):
        raise PreventUpdate
    with db_session() as db:
        if db.scalar(select(Project.id).where(Project.slug == project)) is None:
            raise PreventUpdate
        rules = list_rules(db, project)
        rows = []
        options = []
        for rule in rules:
            metric, condition = _rule_text(rule)
            rows.append(
                html.Tr(
                    [
                        html.Td(rule.name),
                        html.Td(rule.model),
                        html.Td(rule.environment or "all"),
                        html.Td(metric),
                        html.Td(condition),
                        html.Td(str(rule.consecutive_windows)),
                        html.Td(rule.severity),
                        html.Td("enabled" if rule.enabled else "disabled"),
                    ]
                )
            )
            options.append({"label": f"{rule.name} ({rule.model})", "value": str(rule.id)})
    if not rows:
        return html.P(
            "This project has no alert rule yet.", className="text-body-secondary", id="admin-rules-empty"
        ), options
    header = html.Thead(
        html.Tr(
            [
                html.Th(t)
                for t in (
                    "Rule",
                    "Model",
                    "Environment",
                    "Metric",
                    "Fires when",
                    "Windows",
                    "Severity",
                    "State",
                )
            ]
        )
    )
    return dbc.Table([header, html.Tbody(rows)], size="sm", hover=True, id="admin-rules-table"), options


@dash.callback(
    Output(ID.RULE_MESSAGE, "children"),
    Output(ID.REFRESH, "data", allow_duplicate=True),
    Input(ID.CREATE_RULE, "n_clicks"),
    State(ID.RULES_PROJECT, "value"),
    State(ID.RULE_NAME, "value"),
    State(ID.RULE_MODEL, "value"),
    State(ID.RULE_KIND, "value"),
    State(ID.RULE_METRIC, "value"),
    State(ID.RULE_COLUMN, "value"),
    State(ID.RULE_OPERATOR, "value"),
    State(ID.RULE_THRESHOLD, "value"),
    State(ID.RULE_WINDOWS, "value"),
    State(ID.RULE_MAX_AGE, "value"),
    State(ID.RULE_SEVERITY, "value"),
    State(ID.RULE_ENVIRONMENT, "value"),
    State(ID.REFRESH, "data"),
    prevent_initial_call=True,
)
@requires(Permission.MANAGE_ALERT_RULES)
def create_rule_clicked(
    n_clicks: int | None,
    project: str | None,
    name: str | None,
    model: str | None,
    kind: str | None,
    metric: str | None,
    column: str | None,
    operator: str | None,
    threshold: Any,
    windows: Any,
    max_age_hours: Any,
    severity: str | None,
    environment: str | None,
    refresh: int | None,
) -> tuple[dbc.Alert, int]:
    """Create an alert rule (threshold or freshness) on the chosen project."""
    if not n_clicks:
        raise PreventUpdate
    if not project:
        return notice("warning", "Choose a project first."), dash.no_update
    kind = kind or "threshold"

    def change(db: Session, actor: Actor) -> str:
        freshness = kind == "freshness"
        spec = RuleSpec(
            name=name or "",
            model=(model or "").strip(),
            kind=kind,
            metric=None if freshness else _text(metric),
            column=None if freshness else _text(column),
            operator=None if freshness else _text(operator),
            threshold=None if freshness else _number(threshold, "threshold"),
            consecutive_windows=1
            if freshness
            else (_number(windows, "consecutive windows", integer=True) or 1),
            max_age_hours=_number(max_age_hours, "max age hours") if freshness else None,
            severity=severity or "warning",
            environment=_text(environment),
        )
        rule = create_rule(db, actor, project, spec)
        return f"Alert rule {rule.name} created."

    outcome = run_change(change)
    return outcome, refresh_after(outcome, refresh)


def _change_rule(rule_id: str | None, **changes: Any) -> dbc.Alert:
    if not rule_id:
        return notice("warning", "Choose a rule first.")
    try:
        identifier = int(rule_id)
    except ValueError:
        raise PreventUpdate from None

    def change(db: Session, actor: Actor) -> str:
        rule = update_rule(db, actor, identifier, **changes)
        state = "enabled" if rule.enabled else "disabled"
        threshold = f", threshold {rule.threshold:g}" if rule.threshold is not None else ""
        return f"Alert rule {rule.name}: {state}{threshold}."

    return run_change(change)


@dash.callback(
    Output(ID.RULE_MESSAGE, "children", allow_duplicate=True),
    Output(ID.REFRESH, "data", allow_duplicate=True),
    Input(ID.UPDATE_THRESHOLD, "n_clicks"),
    State(ID.RULE_SELECT, "value"),
    State(ID.RULE_NEW_THRESHOLD, "value"),
    State(ID.REFRESH, "data"),
    prevent_initial_call=True,
)
@requires(Permission.MANAGE_ALERT_RULES)
def update_threshold_clicked(
    n_clicks: int | None, rule_id: str | None, threshold: Any, refresh: int | None
) -> tuple[dbc.Alert, int]:
    """Change the chosen rule's threshold."""
    if not n_clicks:
        raise PreventUpdate
    try:
        value = _number(threshold, "threshold")
    except InvalidInput as error:
        return notice("danger", str(error)), dash.no_update
    outcome = _change_rule(rule_id, threshold=value)
    return outcome, refresh_after(outcome, refresh)


@dash.callback(
    Output(ID.RULE_MESSAGE, "children", allow_duplicate=True),
    Output(ID.REFRESH, "data", allow_duplicate=True),
    Input(ID.ENABLE_RULE, "n_clicks"),
    State(ID.RULE_SELECT, "value"),
    State(ID.REFRESH, "data"),
    prevent_initial_call=True,
)
@requires(Permission.MANAGE_ALERT_RULES)
def enable_rule_clicked(
    n_clicks: int | None, rule_id: str | None, refresh: int | None
) -> tuple[dbc.Alert, int]:
    """Enable the chosen rule."""
    if not n_clicks:
        raise PreventUpdate
    outcome = _change_rule(rule_id, enabled=True)
    return outcome, refresh_after(outcome, refresh)


@dash.callback(
    Output(ID.RULE_MESSAGE, "children", allow_duplicate=True),
    Output(ID.REFRESH, "data", allow_duplicate=True),
    Input(ID.DISABLE_RULE, "n_clicks"),
    State(ID.RULE_SELECT, "value"),
    State(ID.REFRESH, "data"),
    prevent_initial_call=True,
)
@requires(Permission.MANAGE_ALERT_RULES)
def disable_rule_clicked(
    n_clicks: int | None, rule_id: str | None, refresh: int | None
) -> tuple[dbc.Alert, int]:
    """Disable the chosen rule (its active alerts are resolved)."""
    if not n_clicks:
        raise PreventUpdate
    outcome = _change_rule(rule_id, enabled=False)
    return outcome, refresh_after(outcome, refresh)


# ---------------------------------------------------------------------------- settings


def setting_rows(settings: Any, environ: Any = None) -> list[tuple[str, str]]:
    """``(name, shown value)`` of every setting, secrets masked, plus the GitHub integration's."""
    rows: list[tuple[str, str]] = []
    for item in dataclasses.fields(settings):
        value = getattr(settings, item.name)
        if item.name in SECRET_SETTINGS:
            shown = "set (hidden)" if value else "not set"
        elif item.name in PARTLY_SHOWN_SETTINGS:
            shown = f"{MASK}{str(value)[-4:]}" if value else "not set"
        elif item.name in URL_SETTINGS:
            shown = redact_url(value) or "not set"
        else:
            shown = "not set" if value is None else str(value)
        rows.append((item.name, shown))
    try:
        github = github_config(environ)
        rows += [
            ("github_repository", github.repository or "not set"),
            ("github_api_url", redact_url(github.api_url) or ""),
            ("github_token", "set (hidden)" if github.token_configured else "not set"),
        ]
    except InvalidInput as error:
        rows.append(("github", str(error)))
    return rows


@dash.callback(Output(ID.SETTINGS_TABLE, "children"), Input(ID.SETTINGS_TABLE, "id"))
@requires(Permission.ADMIN_SETTINGS)
def show_settings(_component_id: str) -> dbc.Table:
    """The studio's settings, read-only, secrets masked."""
    rows = [
        html.Tr([html.Td(html.Code(name)), html.Td(value, className="text-break")])
        for name, value in setting_rows(services().settings)
    ]
    header = html.Thead(html.Tr([html.Th("Setting"), html.Th("Value")]))
    return dbc.Table([header, html.Tbody(rows)], size="sm", id="admin-settings-table")

"""Integrations page callbacks: what each connection points at, and a live "check connection" per item.

Seeing the page needs ``VIEW_INTEGRATIONS``; running a check needs
``MANAGE_INTEGRATIONS`` (the data store check writes a probe object) and is
recorded in the audit log by :func:`jobs.integrations.run_check`. No secret is
ever sent to the browser: credentials show as "configured" or "not configured",
URLs with their password masked.
"""

from __future__ import annotations

from typing import Any

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, html
from dash.exceptions import PreventUpdate

from app.auth import current_actor, db_session, services
from app.rbac import requires
from callbacks.projects import notice
from jobs.integrations import (
    DATA_STORE,
    GITHUB,
    MLFLOW,
    CheckResult,
    GitHubConfig,
    github_config,
    redact_url,
    run_check,
)
from jobs.permissions import Forbidden, Permission, has_permission
from jobs.users import InvalidInput


def config_view(integration: str) -> str:
    """Id of the element showing what one integration points at."""
    return f"integration-config-{integration.replace('_', '-')}"


def checking_section(integration: str) -> str:
    """Id of the wrapper of one integration's check button (shown to those who may check)."""
    return f"integration-checking-{integration.replace('_', '-')}"


def check_button(integration: str) -> str:
    """Id of the "check connection" button of one integration."""
    return f"integration-check-{integration.replace('_', '-')}"


def check_result(integration: str) -> str:
    """Id of the element showing one integration's check result."""
    return f"integration-result-{integration.replace('_', '-')}"


def _configured(value: str | None) -> str:
    return "configured" if value else "not configured"


def describe(
    settings: Any, github: GitHubConfig | None, github_problem: str | None
) -> dict[str, list[tuple[str, str]]]:
    """What each integration points at, secrets reduced to "configured"/"not configured"."""
    store = [("Data root", redact_url(settings.data_uri) or "")]
    if settings.data_is_s3:
        store += [
            ("S3 endpoint", redact_url(settings.s3_endpoint_url) or "AWS default"),
            ("S3 region", settings.s3_region),
            ("Access key", _configured(settings.s3_access_key_id)),
            ("Secret key", _configured(settings.s3_secret_access_key)),
        ]
    mlflow = [
        ("Tracking URI", redact_url(settings.mlflow_tracking_uri) or ""),
        ("Registry URI", redact_url(settings.mlflow_registry_uri) or "same as tracking"),
    ]
    if github_problem:
        git = [("Configuration", github_problem)]
    else:
        assert github is not None
        git = [
            ("Repository", github.repository or "not configured (MMS_GITHUB_REPOSITORY)"),
            ("API", redact_url(github.api_url) or ""),
            ("Token", _configured(github.token)),
        ]
    return {DATA_STORE: store, MLFLOW: mlflow, GITHUB: git}


def _facts(rows: list[tuple[str, str]], integration: str) -> html.Dl:
    items: list[Any] = []
    for term, value in rows:
        items += [html.Dt(term, className="col-sm-4"), html.Dd(value, className="col-sm-8 mb-1 text-break")]
    return html.Dl(items, className="row mb-2 small", id=f"integration-facts-{integration.replace('_', '-')}")


@dash.callback(
    Output(config_view(DATA_STORE), "children"),
    Output(config_view(MLFLOW), "children"),
    Output(config_view(GITHUB), "children"),
    Input(config_view(DATA_STORE), "id"),
)
@requires(Permission.VIEW_INTEGRATIONS)
def show_integrations(_component_id: str) -> tuple[Any, Any, Any]:
    """What each integration points at (secrets reduced to configured / not configured)."""
    settings = services().settings
    try:
        github, problem = github_config(), None
    except InvalidInput as error:
        github, problem = None, str(error)
    described = describe(settings, github, problem)
    return tuple(_facts(described[name], name) for name in (DATA_STORE, MLFLOW, GITHUB))  # type: ignore[return-value]


@dash.callback(
    Output(checking_section(DATA_STORE), "hidden"),
    Output(checking_section(MLFLOW), "hidden"),
    Output(checking_section(GITHUB), "hidden"),
    Input(checking_section(DATA_STORE), "id"),
)
@requires(Permission.VIEW_INTEGRATIONS)
def checks_hidden(_component_id: str) -> tuple[bool, bool, bool]:
    """Reveal the check buttons to those who may run checks (each check verifies again)."""
    hidden = not has_permission(current_actor(), Permission.MANAGE_INTEGRATIONS)
    return hidden, hidden, hidden


def result_view(result: CheckResult) -> dbc.Alert:
    """A check result as a coloured message: summary, details and the error's first line."""
    lines: list[Any] = [html.Strong(("Connected: " if result.ok else "Failed: ") + result.summary)]
    lines += [html.Div(detail, className="small") for detail in result.details]
    if result.error:
        lines.append(html.Div(f"Error: {result.error}", className="small font-monospace text-break"))
    lines.append(html.Div(f"{result.duration_s:.2f} s", className="small text-body-secondary"))
    return dbc.Alert(lines, color="success" if result.ok else "danger", class_name="py-2 mb-0")


def check_connection(integration: str) -> dbc.Alert:
    """Run one check as the signed-in user.

    Raises:
        PreventUpdate: when the user may not manage integrations.
    """
    actor = current_actor()
    if actor is None:
        raise PreventUpdate
    try:
        result = run_check(db_session, actor, integration, services().settings)
    except Forbidden:
        raise PreventUpdate from None
    except InvalidInput as error:
        return notice("danger", str(error))
    return result_view(result)


@dash.callback(
    Output(check_result(DATA_STORE), "children"),
    Input(check_button(DATA_STORE), "n_clicks"),
    prevent_initial_call=True,
)
@requires(Permission.MANAGE_INTEGRATIONS)
def check_data_store_clicked(n_clicks: int | None) -> dbc.Alert:
    """List the data root and write, read back and delete a probe object."""
    if not n_clicks:
        raise PreventUpdate
    return check_connection(DATA_STORE)


@dash.callback(
    Output(check_result(MLFLOW), "children"),
    Input(check_button(MLFLOW), "n_clicks"),
    prevent_initial_call=True,
)
@requires(Permission.MANAGE_INTEGRATIONS)
def check_mlflow_clicked(n_clicks: int | None) -> dbc.Alert:
    """Search MLflow's experiments."""
    if not n_clicks:
        raise PreventUpdate
    return check_connection(MLFLOW)


@dash.callback(
    Output(check_result(GITHUB), "children"),
    Input(check_button(GITHUB), "n_clicks"),
    prevent_initial_call=True,
)
@requires(Permission.MANAGE_INTEGRATIONS)
def check_github_clicked(n_clicks: int | None) -> dbc.Alert:
    """Read the configured repository through the GitHub API."""
    if not n_clicks:
        raise PreventUpdate
    return check_connection(GITHUB)

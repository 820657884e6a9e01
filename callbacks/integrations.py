"""Integrations page callbacks: what each connection points at, and a live "check connection" per item.

Seeing the page needs ``VIEW_INTEGRATIONS``; running a check needs
``MANAGE_INTEGRATIONS`` (the data store check writes a probe object) and is
recorded in the audit log by :func:`jobs.integrations.run_check`. No secret is
ever sent to the browser: credentials show as "configured" or "not configured",
URLs with their password masked.

GitHub webhooks: the repositories whose deliveries are accepted
(:func:`jobs.github.list_github`, per project with ``VIEW_INTEGRATIONS``), the
payload URL to paste into GitHub, and for ``MANAGE_INTEGRATIONS`` (per project:
the Production Team and administrators) a form that links a repository to a
project with its webhook secret (:func:`jobs.github.configure_github` stores it
encrypted and re-checks the permission) or removes one. The secret goes from the
password field to the job once; the field is emptied after saving and the page
only ever says when a secret was set.
"""

from __future__ import annotations

from typing import Any

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, html
from dash.exceptions import PreventUpdate
from flask import request

from app.auth import current_actor, db_session, services
from app.components.ids.integrations import (
    WebhookID,
    check_button,
    check_result,
    checking_section,
    config_view,
)
from app.rbac import requires
from callbacks.projects import bump, kept_choice, notice, project_options
from jobs.github import IntegrationView, configure_github, list_github, remove_github
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
from jobs.users import Conflict, InvalidInput

# Where the REST API receives deliveries (app/api/views.py ``github_webhook`` under /api/v1).
WEBHOOK_PATH = "/api/v1/integrations/github/webhook"


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


# ---------------------------------------------------------------------------- GitHub webhooks


def webhook_url(host_url: str) -> str:
    """The payload URL GitHub must post to, on the host the studio is being served from."""
    return host_url.rstrip("/") + WEBHOOK_PATH


def secret_set_on(view: IntegrationView) -> str:
    """What the page says about a stored secret: only when it was set, never the secret."""
    return f"secret set on {view.updated_at:%Y-%m-%d %H:%M} UTC"


def repositories_table(views: list[IntegrationView]) -> Any:
    """The configured repositories (repository, project, when their secret was set), or why there are none."""
    if not views:
        return html.P(
            "No repository is configured: GitHub's deliveries are refused until one is linked to a project.",
            className="small text-body-secondary",
            id="integration-github-empty",
        )
    header = html.Thead(html.Tr([html.Th("Repository"), html.Th("Project"), html.Th("Webhook secret")]))
    rows = [
        html.Tr([html.Td(view.repository), html.Td(view.project), html.Td(secret_set_on(view))])
        for view in views
    ]
    return dbc.Table(
        [header, html.Tbody(rows)],
        size="sm",
        responsive=True,
        class_name="small",
        id="integration-github-table",
    )


@dash.callback(
    Output(WebhookID.URL, "children"),
    Output(WebhookID.REPOSITORIES, "children"),
    Output(WebhookID.MANAGE, "hidden"),
    Output(WebhookID.PROJECT, "options"),
    Output(WebhookID.PROJECT, "value"),
    Output(WebhookID.REMOVE_REPOSITORY, "options"),
    Output(WebhookID.REMOVE_REPOSITORY, "value"),
    Input(WebhookID.REPOSITORIES, "id"),
    Input(WebhookID.REFRESH, "data"),
    State(WebhookID.PROJECT, "value"),
)
@requires(Permission.VIEW_INTEGRATIONS)
def show_github_webhooks(
    _component_id: str, _refresh: int | None, selected_project: str | None
) -> tuple[Any, ...]:
    """Payload URL, configured repositories and, for managers, the projects and repositories they may edit."""
    actor = current_actor()
    with db_session() as db:
        views = list_github(db, actor)
    projects = project_options(Permission.MANAGE_INTEGRATIONS)
    removable = [
        {"label": f"{view.repository} ({view.project})", "value": view.repository}
        for view in views
        if has_permission(actor, Permission.MANAGE_INTEGRATIONS, view.project)
    ]
    return (
        webhook_url(request.host_url),
        repositories_table(views),
        not projects,
        projects,
        kept_choice(projects, selected_project),
        removable,
        removable[0]["value"] if removable else None,
    )


def _webhook_change(change: Any) -> tuple[dbc.Alert, bool]:
    """Run ``change(session, actor)`` in a write transaction: ``(notice, succeeded)``.

    A job's refusal (``Forbidden``) is shown like any other error: the person sees why nothing happened.
    """
    actor = current_actor()
    if actor is None:
        raise PreventUpdate
    try:
        with db_session(write=True) as db:
            text = change(db, actor)
    except (Forbidden, InvalidInput, Conflict) as error:
        return notice("danger", str(error), "integration-github-result"), False
    return notice("success", text, "integration-github-result"), True


@dash.callback(
    Output(WebhookID.MESSAGE, "children"),
    Output(WebhookID.SECRET, "value"),
    Output(WebhookID.REFRESH, "data"),
    Input(WebhookID.SAVE, "n_clicks"),
    State(WebhookID.PROJECT, "value"),
    State(WebhookID.REPOSITORY, "value"),
    State(WebhookID.SECRET, "value"),
    State(WebhookID.REFRESH, "data"),
    prevent_initial_call=True,
)
@requires(Permission.MANAGE_INTEGRATIONS)
def save_github_clicked(
    n_clicks: int | None,
    project: str | None,
    repository: str | None,
    secret: str | None,
    refresh: int | None,
) -> tuple[Any, Any, Any]:
    """Link ``repository`` to ``project`` with ``secret`` (stored encrypted); empty the secret field after."""
    if not n_clicks:
        raise PreventUpdate
    if not project:
        return (
            notice("danger", "Choose the project whose CI runs in the repository."),
            dash.no_update,
            dash.no_update,
        )
    secret_key = services().settings.secret_key

    def change(db: Any, actor: Any) -> str:
        stored = configure_github(
            db, actor, project, (repository or "").strip(), secret or "", secret_key=secret_key
        )
        return (
            f"Webhooks of {stored.repository} are accepted for project {project}; "
            f"secret set on {stored.updated_at:%Y-%m-%d %H:%M} UTC."
        )

    outcome, ok = _webhook_change(change)
    if not ok:
        return outcome, dash.no_update, dash.no_update
    return outcome, "", bump(refresh)


@dash.callback(
    Output(WebhookID.MESSAGE, "children", allow_duplicate=True),
    Output(WebhookID.REFRESH, "data", allow_duplicate=True),
    Input(WebhookID.REMOVE_CONFIRM, "submit_n_clicks"),
    State(WebhookID.REMOVE_REPOSITORY, "value"),
    State(WebhookID.REFRESH, "data"),
    prevent_initial_call=True,
)
@requires(Permission.MANAGE_INTEGRATIONS)
def remove_github_confirmed(
    submit_n_clicks: int | None, repository: str | None, refresh: int | None
) -> tuple[Any, Any]:
    """Stop accepting ``repository``'s webhooks (after the confirmation); its runs stay."""
    if not submit_n_clicks:
        raise PreventUpdate
    if not repository:
        return notice("danger", "Choose the repository to remove."), dash.no_update

    def change(db: Any, actor: Any) -> str:
        remove_github(db, actor, repository)
        return f"Webhooks of {repository} are no longer accepted; its stored workflow runs stay."

    outcome, ok = _webhook_change(change)
    return outcome, bump(refresh) if ok else dash.no_update

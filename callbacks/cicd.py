"""CI/CD page callbacks: live deployments with their permitted actions, and GitHub workflow runs.

Deployments come from :mod:`jobs.deploy` (``list_deployments`` / ``deployment_view``,
``VIEW_CICD`` per project): per project and environment the status, the canary
step, the traffic split between the stable version and the new one, the latest
analysis (pass/fail per metric with both values), the reason of a pause or a
rollback, and the selected deployment's history. The page's ``dcc.Interval``
re-reads them every few seconds while the page is open.

Actions (promote, pause, resume need ``DEPLOY``; abort and rollback need
``ROLLBACK``, as in :mod:`jobs.deploy`) are buttons behind a confirmation, shown
only when the deployment's state allows the action *and* the user holds its
permission on the deployment's project. Showing them is cosmetic: each callback
declares its permission for the guard, and the job re-checks it on the project in
its transaction. Whatever the job refuses (state, permission, missing reason) is
shown as its message.

Workflow runs come from GitHub's webhooks (:func:`jobs.github.list_workflow_runs`,
keyset-paged, newest first), each with the model versions built from its commit
(:func:`jobs.github.versions_for_commit`) and the promotion requests of those
versions with their approvals (:func:`jobs.approvals.list_requests`, only where
the user may view approvals). Everything a payload carried (workflow and branch
names) is rendered as text; the only links are to ``https://github.com/``, built
from the validated repository name and commit SHA, or the run's own URL when it
points there.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, html
from dash.exceptions import PreventUpdate

from app.auth import current_actor, db_session, services
from app.components.ids.cicd import ALL, ID
from app.rbac import requires
from callbacks.projects import bump, kept_choice, notice, project_options
from jobs import deploy
from jobs.approvals import list_requests
from jobs.db.api_models import WorkflowRun
from jobs.db.governance import PromotionRequest
from jobs.github import list_workflow_runs, versions_for_commit
from jobs.permissions import Actor, Forbidden, Permission, has_permission
from jobs.users import Conflict, InvalidInput

DEPLOYMENTS_PAGE_SIZE = 20
MAX_DEPLOYMENTS = 500  # jobs.deploy.list_deployments' largest limit
RUNS_PAGE_SIZE = 20
MAX_REQUESTS_READ = 1_000
MAX_EVENT_DETAILS_SHOWN = 300
GITHUB = "https://github.com/"
_REPOSITORY_RE = re.compile(r"[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}")
_SHA_RE = re.compile(r"[0-9a-f]{40}")

# The permission each action needs (the job checks the same on the deployment's project).
ACTION_PERMISSIONS: dict[str, Permission] = {
    deploy.PROMOTE: Permission.DEPLOY,
    deploy.PAUSE: Permission.DEPLOY,
    deploy.RESUME: Permission.DEPLOY,
    deploy.ABORT: Permission.ROLLBACK,
    deploy.ROLLBACK: Permission.ROLLBACK,
}
# Action -> the wrapper its button sits in (revealed when the action is possible and permitted).
ACTION_SECTIONS: dict[str, str] = {
    deploy.PROMOTE: ID.PROMOTE_SECTION,
    deploy.PAUSE: ID.PAUSE_SECTION,
    deploy.RESUME: ID.RESUME_SECTION,
    deploy.ABORT: ID.ABORT_SECTION,
    deploy.ROLLBACK: ID.ROLLBACK_SECTION,
}
STATUS_COLOURS = {
    deploy.QUEUED: "secondary",
    deploy.RUNNING: "primary",
    deploy.PAUSED: "warning",
    deploy.SUCCEEDED: "success",
    deploy.ROLLED_BACK: "danger",
    deploy.ROLLBACK_QUEUED: "warning",
    deploy.ABORTED: "dark",
    deploy.FAILED: "danger",
}
RUN_COLOURS = {"success": "success", "failure": "danger", "cancelled": "dark", "timed_out": "danger"}
METRIC_TITLES = {
    "requests": "Requests",
    "success_rate": "Success rate",
    "latency_p99_ms": "Latency p99 (ms)",
    "latency_p99_vs_stable": "p99 vs stable (ratio)",
    "prediction_drift": "Prediction drift",
}


# ---------------------------------------------------------------------------- small pieces


def when(moment: datetime | None) -> str:
    """A UTC time as ``YYYY-MM-DD HH:MM UTC`` ("—" when unknown)."""
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "—"


def _badge(text: str, colour: str, component_id: str | None = None) -> dbc.Badge:
    extra = {"id": component_id} if component_id else {}
    return dbc.Badge(text, color=colour, class_name="text-wrap", **extra)


def status_badge(status: str) -> dbc.Badge:
    """The deployment status as a coloured badge."""
    return _badge(status.replace("_", " "), STATUS_COLOURS.get(status, "secondary"))


def _optional(value: str | None) -> str | None:
    """A filter's value, ``None`` for "all"."""
    return None if not value or value == ALL else value


def _deployment_id(value: Any) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _number(value: float | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if float(value).is_integer():
        return f"{int(value)}"
    return f"{value:.4g}"


# ---------------------------------------------------------------------------- deployments


def traffic_split(view: deploy.DeploymentView) -> tuple[float, float]:
    """``(stable %, new version %)`` of the environment's traffic for this deployment right now."""
    if view.strategy == deploy.CANARY:
        if view.status == deploy.SUCCEEDED:
            return 0.0, 100.0
        canary = min(max(view.canary_weight_pct, 0.0), 100.0)
        return 100.0 - canary, canary
    # Direct and blue-green switch all traffic at once while running and once done.
    if view.status in (deploy.RUNNING, deploy.SUCCEEDED):
        return 0.0, 100.0
    return 100.0, 0.0


def traffic_bar(view: deploy.DeploymentView, *, height: str = "1.1rem") -> dbc.Progress:
    """The traffic split as a two-part bar: stable version (grey) and the version being deployed (blue)."""
    stable, new = traffic_split(view)
    stable_name = f"v{view.stable_version}" if view.stable_version else "stable"
    parts = []
    if stable > 0:
        parts.append(
            dbc.Progress(value=stable, label=f"{stable_name} {stable:g}%", color="secondary", bar=True)
        )
    if new > 0:
        parts.append(dbc.Progress(value=new, label=f"v{view.version} {new:g}%", color="info", bar=True))
    return dbc.Progress(parts, style={"height": height, "minWidth": "11rem"}, class_name="small")


def step_text(view: deploy.DeploymentView) -> str:
    """Where the rollout is: ``step 2 of 4 (25%)`` for a canary, the strategy otherwise."""
    if view.strategy != deploy.CANARY:
        return "single switch" if view.strategy == deploy.DIRECT else "blue → green"
    if view.current_step is None or not view.steps:
        return f"not started ({len(view.steps)} steps)"
    index = min(max(view.current_step, 0), len(view.steps) - 1)
    return f"step {index + 1} of {len(view.steps)} ({view.steps[index]}%)"


def analysis_summary(view: deploy.DeploymentView) -> Any:
    """The latest analysis in a few words: ``3/3 passed`` (green), ``1 failed`` (red) or "none yet"."""
    judged = [result for result in view.analyses if result.passed is not None]
    if not view.analyses:
        return html.Span("none yet", className="text-body-secondary")
    failed = [result for result in judged if result.passed is False]
    if failed:
        names = ", ".join(METRIC_TITLES.get(r.metric, r.metric) for r in failed)
        return _badge(f"{len(failed)} failed: {names}", "danger")
    if len(judged) < len(view.analyses):
        return _badge(f"{len(judged)}/{len(view.analyses)} judged", "warning")
    return _badge(f"{len(judged)}/{len(view.analyses)} passed", "success")


def _current_ids(views: list[deploy.DeploymentView]) -> set[int]:
    """The newest deployment of each (project, model, environment): what serves or is rolling out there."""
    seen: set[tuple[str, str, str]] = set()
    current = set()
    for view in views:  # newest first
        key = (view.project, view.model, view.environment)
        if key not in seen:
            seen.add(key)
            current.add(view.id)
    return current


def deployments_table(views: list[deploy.DeploymentView], current: set[int]) -> dbc.Table:
    """One row per deployment: where, what, how far, how the traffic is split, the last analysis."""
    header = html.Thead(
        html.Tr(
            [
                html.Th(title)
                for title in (
                    "#",
                    "Project",
                    "Env",
                    "Model",
                    "Version",
                    "Strategy",
                    "Status",
                    "Step",
                    "Traffic",
                    "Last analysis",
                    "Reason",
                    "Updated",
                )
            ]
        )
    )
    rows = []
    for view in views:
        version = [f"v{view.version}"]
        if view.id in current:
            version += [" ", _badge("current", "info")]
        rows.append(
            html.Tr(
                [
                    html.Td(str(view.id)),
                    html.Td(view.project),
                    html.Td(view.environment),
                    html.Td(view.model),
                    html.Td(version, className="text-nowrap"),
                    html.Td(view.strategy),
                    html.Td(status_badge(view.status)),
                    html.Td(step_text(view), className="text-nowrap"),
                    html.Td(traffic_bar(view)),
                    html.Td(analysis_summary(view)),
                    html.Td(html.Small(view.reason or "", className="text-break")),
                    html.Td(when(view.updated_at), className="text-nowrap small"),
                ],
                id=f"cicd-deployment-row-{view.id}",
            )
        )
    return dbc.Table(
        [header, html.Tbody(rows)], size="sm", hover=True, responsive=True, id="cicd-deployments-table"
    )


def deployment_label(view: deploy.DeploymentView) -> str:
    """How a deployment is named in the selector."""
    return f"#{view.id} {view.project} · {view.model} v{view.version} → {view.environment} ({view.status})"


def _empty_deployments(project: str | None, environment: str | None) -> html.P:
    scope = ""
    if project:
        scope += f" of project {project}"
    if environment:
        scope += f" in {environment}"
    return html.P(
        f"No deployment{scope} yet. A deployment is queued when a promotion request reaches its approvals "
        "(Approvals page) or through the REST API; the deployment job then rolls it out and it shows here.",
        className="text-body-secondary",
        id="cicd-deployments-empty",
    )


@dash.callback(
    Output(ID.PROJECT, "options"),
    Output(ID.PROJECT, "value"),
    Input(ID.PROJECT, "id"),
    State(ID.PROJECT, "value"),
)
@requires(Permission.VIEW_CICD)
def list_cicd_projects(_component_id: str, selected: str | None) -> tuple[list[dict[str, str]], str]:
    """ "All projects" and the projects whose CI/CD the user may view."""
    options = [{"label": "All projects", "value": ALL}, *project_options(Permission.VIEW_CICD)]
    values = [option["value"] for option in options]
    return options, selected if selected in values else ALL


@dash.callback(
    Output(ID.DEPLOYMENTS, "children"),
    Output(ID.DEPLOYMENTS_INFO, "children"),
    Output(ID.DEPLOYMENTS_PREVIOUS, "disabled"),
    Output(ID.DEPLOYMENTS_NEXT, "disabled"),
    Output(ID.DEPLOYMENT, "options"),
    Output(ID.DEPLOYMENT, "value"),
    Input(ID.PROJECT, "value"),
    Input(ID.ENVIRONMENT, "value"),
    Input(ID.DEPLOYMENTS_PAGE, "data"),
    Input(ID.TICK, "n_intervals"),
    Input(ID.REFRESH, "data"),
    State(ID.DEPLOYMENT, "value"),
)
@requires(Permission.VIEW_CICD)
def show_deployments(
    project: str | None,
    environment: str | None,
    page: int | None,
    _tick: int | None,
    _refresh: int | None,
    selected: str | None,
) -> tuple[Any, ...]:
    """One page of deployments (newest first), "page X", the pager's state and the deployment selector."""
    project, environment = _optional(project), _optional(environment)
    last_page = MAX_DEPLOYMENTS // DEPLOYMENTS_PAGE_SIZE
    page = min(max(1, page or 1), last_page)
    try:
        with db_session() as db:
            views = deploy.list_deployments(
                db,
                current_actor(),
                project=project,
                environment=environment,
                limit=min(page * DEPLOYMENTS_PAGE_SIZE + 1, MAX_DEPLOYMENTS),
            )
    except (Forbidden, InvalidInput) as error:
        return notice("danger", str(error)), "", True, True, [], None
    more = len(views) > page * DEPLOYMENTS_PAGE_SIZE and page < last_page
    shown = views[(page - 1) * DEPLOYMENTS_PAGE_SIZE : page * DEPLOYMENTS_PAGE_SIZE]
    if not shown and page > 1:  # the page emptied (filters changed): show the last one that has rows
        page = max(1, math.ceil(len(views) / DEPLOYMENTS_PAGE_SIZE))
        shown = views[(page - 1) * DEPLOYMENTS_PAGE_SIZE : page * DEPLOYMENTS_PAGE_SIZE]
    if not shown:
        return _empty_deployments(project, environment), "", True, True, [], None
    options = [{"label": deployment_label(view), "value": str(view.id)} for view in shown]
    value = kept_choice(options, selected)
    info = f"Page {page} · deployments {(page - 1) * DEPLOYMENTS_PAGE_SIZE + 1} to "
    info += f"{(page - 1) * DEPLOYMENTS_PAGE_SIZE + len(shown)}"
    table = deployments_table(shown, _current_ids(views))
    return table, info, page <= 1, not more, options, value


@dash.callback(
    Output(ID.DEPLOYMENTS_PAGE, "data"),
    Input(ID.DEPLOYMENTS_PREVIOUS, "n_clicks"),
    State(ID.DEPLOYMENTS_PAGE, "data"),
    prevent_initial_call=True,
)
@requires(Permission.VIEW_CICD)
def previous_deployments(n_clicks: int | None, page: int | None) -> int:
    """One page back (newer deployments)."""
    if not n_clicks:
        raise PreventUpdate
    return max(1, (page or 1) - 1)


@dash.callback(
    Output(ID.DEPLOYMENTS_PAGE, "data", allow_duplicate=True),
    Input(ID.DEPLOYMENTS_NEXT, "n_clicks"),
    State(ID.DEPLOYMENTS_PAGE, "data"),
    prevent_initial_call=True,
)
@requires(Permission.VIEW_CICD)
def next_deployments(n_clicks: int | None, page: int | None) -> int:
    """One page forward (older deployments)."""
    if not n_clicks:
        raise PreventUpdate
    return (page or 1) + 1


@dash.callback(
    Output(ID.DEPLOYMENTS_PAGE, "data", allow_duplicate=True),
    Output(ID.RUNS_CURSORS, "data"),
    Input(ID.PROJECT, "value"),
    Input(ID.ENVIRONMENT, "value"),
    prevent_initial_call=True,
)
@requires(Permission.VIEW_CICD)
def first_pages_on_filter(_project: str | None, _environment: str | None) -> tuple[int, list[int]]:
    """Other filters start both lists at their first page."""
    return 1, []


def analyses_table(view: deploy.DeploymentView) -> Any:
    """The latest analysis: per metric the canary's and the stable version's values, limit and verdict."""
    if not view.analyses:
        return html.P(
            "No analysis yet: the first one runs at the end of the first bake.",
            className="small text-body-secondary",
            id="cicd-analyses-empty",
        )
    rows = []
    for result in view.analyses:
        if result.passed is None:
            verdict = _badge("not judged", "secondary")
        else:
            verdict = _badge("pass", "success") if result.passed else _badge("fail", "danger")
        rows.append(
            html.Tr(
                [
                    html.Td(METRIC_TITLES.get(result.metric, result.metric)),
                    html.Td(_number(result.canary)),
                    html.Td(_number(result.stable)),
                    html.Td(_number(result.threshold)),
                    html.Td(verdict),
                    html.Td(html.Small(result.detail)),
                ]
            )
        )
    header = html.Thead(
        html.Tr([html.Th(t) for t in ("Metric", "Canary", "Stable", "Threshold", "Result", "Detail")])
    )
    return dbc.Table([header, html.Tbody(rows)], size="sm", responsive=True, id="cicd-analyses-table")


def _event_details(details: dict[str, Any]) -> str:
    text = json.dumps(details, sort_keys=True, default=str, separators=(", ", ": ")) if details else ""
    return text if len(text) <= MAX_EVENT_DETAILS_SHOWN else text[:MAX_EVENT_DETAILS_SHOWN] + " ..."


def events_table(view: deploy.DeploymentView) -> dbc.Table:
    """The deployment's history, newest first."""
    rows = [
        html.Tr(
            [
                html.Td(when(event.at), className="text-nowrap small"),
                html.Td(html.Code(event.kind)),
                html.Td(event.actor),
                html.Td(html.Small(_event_details(event.details), className="font-monospace text-break")),
            ]
        )
        for event in reversed(view.events)
    ]
    header = html.Thead(html.Tr([html.Th(t) for t in ("Time", "Event", "By", "Details")]))
    return dbc.Table([header, html.Tbody(rows)], size="sm", responsive=True, id="cicd-events-table")


def _steps_line(view: deploy.DeploymentView) -> Any:
    if view.strategy != deploy.CANARY:
        return None
    parts: list[Any] = []
    for index, weight in enumerate(view.steps):
        if index:
            parts.append(" → ")
        parts.append(html.Strong(f"{weight}%") if index == view.current_step else f"{weight}%")
    bake = f" · bake {view.bake_seconds} s per step" if view.bake_seconds else ""
    return html.Div(["Steps: ", *parts, bake], className="small mb-2", id="cicd-detail-steps")


def deployment_detail(view: deploy.DeploymentView) -> list[Any]:
    """Facts, traffic, the latest analysis, the reason and the history of one deployment."""
    facts = [
        ("Deployment", f"#{view.id}: {view.project} · {view.model} v{view.version} → {view.environment}"),
        ("Strategy", view.strategy),
        ("Stable version", f"v{view.stable_version}" if view.stable_version else "none"),
        ("Rollback target", f"v{view.previous_version}" if view.previous_version else "none"),
        ("Progress", step_text(view)),
        ("Queued", when(view.created_at)),
        ("Updated", when(view.updated_at)),
    ]
    items: list[Any] = []
    for term, value in facts:
        items += [html.Dt(term, className="col-sm-3"), html.Dd(value, className="col-sm-9 mb-1 text-break")]
    parts: list[Any] = [
        html.Div([html.Span("Status ", className="me-1"), status_badge(view.status)], className="mb-2"),
        html.Dl(items, className="row mb-2 small", id="cicd-detail-facts"),
        _steps_line(view),
        html.Div(traffic_bar(view, height="1.6rem"), className="mb-3", id="cicd-detail-traffic"),
    ]
    if view.reason:
        colour = "warning" if view.status in (deploy.PAUSED, deploy.QUEUED, deploy.RUNNING) else "danger"
        title = {
            deploy.ROLLED_BACK: "Rolled back: ",
            deploy.ABORTED: "Aborted: ",
            deploy.PAUSED: "Paused: ",
            deploy.FAILED: "Failed: ",
        }.get(view.status, "Reason: ")
        parts.append(
            dbc.Alert(
                [html.Strong(title), view.reason], color=colour, class_name="py-2", id="cicd-detail-reason"
            )
        )
    if view.requested_action:
        parts.append(
            dbc.Alert(
                f"{view.requested_action} requested; the deployment job carries it out at its next poll.",
                color="info",
                class_name="py-2",
                id="cicd-detail-requested",
            )
        )
    parts += [
        html.H3("Latest analysis", className="h6"),
        analyses_table(view),
        html.H3("History", className="h6"),
        events_table(view),
    ]
    return [part for part in parts if part is not None]


def hidden_actions(actor: Actor | None, view: deploy.DeploymentView | None) -> tuple[bool, ...]:
    """Per action (promote, pause, resume, abort, rollback): hide its button unless possible and permitted."""
    return tuple(
        view is None
        or action not in view.allowed_actions
        or not has_permission(actor, ACTION_PERMISSIONS[action], view.project)
        for action in ACTION_SECTIONS
    )


@dash.callback(
    Output(ID.DETAIL, "children"),
    *(Output(section, "hidden") for section in ACTION_SECTIONS.values()),
    Input(ID.DEPLOYMENT, "value"),
    Input(ID.TICK, "n_intervals"),
    Input(ID.REFRESH, "data"),
)
@requires(Permission.VIEW_CICD)
def show_deployment(selected: str | None, _tick: int | None, _refresh: int | None) -> tuple[Any, ...]:
    """The selected deployment in detail, and which of its actions the user may take now."""
    actor = current_actor()
    deployment_id = _deployment_id(selected)
    if deployment_id is None:
        empty = html.P(
            "Select a deployment to see its steps, analyses and history.",
            className="small text-body-secondary",
            id="cicd-detail-empty",
        )
        return (empty, *hidden_actions(actor, None))
    try:
        with db_session() as db:
            view = deploy.deployment_view(db, actor, deployment_id)
    except (Forbidden, Conflict) as error:
        return (notice("danger", str(error)), *hidden_actions(actor, None))
    return (deployment_detail(view), *hidden_actions(actor, view))


ActionCommand = Callable[..., deploy.DeploymentView]


def run_action(action: str, command: ActionCommand, selected: str | None, reason: str | None) -> dbc.Alert:
    """Ask the deployment job for ``action`` on the selected deployment and say what happened.

    The job's refusal (state, permission on the project, missing reason) is shown as its message.
    """
    actor = current_actor()
    if actor is None:
        raise PreventUpdate
    deployment_id = _deployment_id(selected)
    if deployment_id is None:
        return notice("danger", "Select a deployment first.", "cicd-action-result")
    try:
        view = command(services().session_factory, actor, deployment_id, (reason or "").strip())
    except (Forbidden, InvalidInput, Conflict) as error:
        return notice("danger", str(error), "cicd-action-result")
    if view.requested_action == action:
        text = (
            f"{action.capitalize()} requested for deployment #{view.id}; "
            "the deployment job carries it out at its next poll."
        )
    else:
        text = f"Deployment #{view.id} is now {view.status.replace('_', ' ')}."
    return notice("success", text, "cicd-action-result")


def _after(outcome: dbc.Alert, refresh: int | None) -> tuple[dbc.Alert, Any]:
    return outcome, bump(refresh) if outcome.color == "success" else dash.no_update


def _action_callback(confirm: str) -> Callable[[Callable[..., Any]], Any]:
    return dash.callback(
        Output(ID.ACTION_MESSAGE, "children", allow_duplicate=True),
        Output(ID.REFRESH, "data", allow_duplicate=True),
        Input(confirm, "submit_n_clicks"),
        State(ID.DEPLOYMENT, "value"),
        State(ID.REASON, "value"),
        State(ID.REFRESH, "data"),
        prevent_initial_call=True,
    )


@_action_callback(ID.PROMOTE_CONFIRM)
@requires(Permission.DEPLOY)
def promote_confirmed(
    submit_n_clicks: int | None, selected: str | None, reason: str | None, refresh: int | None
) -> tuple[Any, Any]:
    """Skip the remaining canary steps (``DEPLOY``)."""
    if not submit_n_clicks:
        raise PreventUpdate
    return _after(run_action(deploy.PROMOTE, deploy.promote_deployment, selected, reason), refresh)


@_action_callback(ID.PAUSE_CONFIRM)
@requires(Permission.DEPLOY)
def pause_confirmed(
    submit_n_clicks: int | None, selected: str | None, reason: str | None, refresh: int | None
) -> tuple[Any, Any]:
    """Hold the rollout at its current split (``DEPLOY``)."""
    if not submit_n_clicks:
        raise PreventUpdate
    return _after(run_action(deploy.PAUSE, deploy.pause_deployment, selected, reason), refresh)


@_action_callback(ID.RESUME_CONFIRM)
@requires(Permission.DEPLOY)
def resume_confirmed(
    submit_n_clicks: int | None, selected: str | None, reason: str | None, refresh: int | None
) -> tuple[Any, Any]:
    """Continue a paused rollout (``DEPLOY``)."""
    if not submit_n_clicks:
        raise PreventUpdate
    return _after(run_action(deploy.RESUME, deploy.resume_deployment, selected, reason), refresh)


@_action_callback(ID.ABORT_CONFIRM)
@requires(Permission.ROLLBACK)
def abort_confirmed(
    submit_n_clicks: int | None, selected: str | None, reason: str | None, refresh: int | None
) -> tuple[Any, Any]:
    """Stop the rollout and return all traffic to the stable version (``ROLLBACK``, reason required)."""
    if not submit_n_clicks:
        raise PreventUpdate
    return _after(run_action(deploy.ABORT, deploy.abort_deployment, selected, reason), refresh)


@_action_callback(ID.ROLLBACK_CONFIRM)
@requires(Permission.ROLLBACK)
def rollback_confirmed(
    submit_n_clicks: int | None, selected: str | None, reason: str | None, refresh: int | None
) -> tuple[Any, Any]:
    """Return traffic to the previous version now (``ROLLBACK``, reason required)."""
    if not submit_n_clicks:
        raise PreventUpdate
    return _after(run_action(deploy.ROLLBACK, deploy.rollback_deployment_now, selected, reason), refresh)


# ---------------------------------------------------------------------------- workflow runs


def commit_link(repository: str, sha: str) -> Any:
    """The short SHA, linked to the commit on github.com when repository and SHA are well-formed."""
    short = sha[:7]
    if _REPOSITORY_RE.fullmatch(repository or "") and _SHA_RE.fullmatch(sha or ""):
        return html.A(
            html.Code(short),
            href=f"{GITHUB}{repository}/commit/{sha}",
            target="_blank",
            rel="noopener noreferrer",
            title=sha,
        )
    return html.Code(short, title=sha)


def run_name(run: WorkflowRun) -> Any:
    """The workflow's name, linked to the run on github.com when its URL points there (never elsewhere)."""
    name = run.workflow_name or f"run {run.github_run_id}"
    url = run.html_url or ""
    if url.startswith(GITHUB) and not any(char in url for char in "\"'<> \\"):
        return html.A(name, href=url, target="_blank", rel="noopener noreferrer")
    return name


def run_status(run: WorkflowRun) -> dbc.Badge:
    """``completed · success`` (green), ``completed · failure`` (red), ``in_progress`` (blue) ..."""
    if run.status == "completed":
        conclusion = run.conclusion or "unknown"
        return _badge(f"completed · {conclusion}", RUN_COLOURS.get(conclusion, "secondary"))
    return _badge(run.status, "primary" if run.status == "in_progress" else "secondary")


def request_summary(request: PromotionRequest) -> str:
    """``#3 → prod: approved (2/2 approvals: sponsor1, sponsor2)``."""
    approvers = ", ".join(approval.approver.username for approval in request.approvals)
    count = f"{len(request.approvals)}/{request.required_approvals}"
    who = f": {approvers}" if approvers else ""
    return f"#{request.id} → {request.environment}: {request.status} ({count} approvals{who})"


def _versions_cell(
    run: WorkflowRun,
    versions: list[dict[str, str]],
    requests: dict[tuple[str, str, str], list[PromotionRequest]],
) -> Any:
    if not versions:
        if run.status == "completed" and run.conclusion == "success":
            return html.Span("no model version linked", className="small text-body-secondary")
        return html.Span("—", className="text-body-secondary")
    items = []
    project = run.project.slug
    for ref in versions:
        related = requests.get((project, ref["model"], ref["version"]), [])
        lines: list[Any] = [html.Span(f"{ref['model']} v{ref['version']}")]
        lines += [
            html.Div(request_summary(request), className="small text-body-secondary") for request in related
        ]
        items.append(html.Li(lines))
    return html.Ul(items, className="list-unstyled mb-0")


def runs_table(
    runs: list[WorkflowRun],
    versions: dict[int, list[dict[str, str]]],
    requests: dict[tuple[str, str, str], list[PromotionRequest]],
) -> dbc.Table:
    """One row per workflow run with its commit, status, time and the model versions it produced."""
    header = html.Thead(
        html.Tr(
            [
                html.Th(title)
                for title in (
                    "Workflow",
                    "Project",
                    "Branch",
                    "Commit",
                    "Status",
                    "Updated",
                    "Model versions and promotion requests",
                )
            ]
        )
    )
    rows = [
        html.Tr(
            [
                html.Td(run_name(run)),
                html.Td(run.project.slug),
                html.Td(run.head_branch or "—", className="text-break"),
                html.Td(commit_link(run.repository, run.head_sha)),
                html.Td(run_status(run)),
                html.Td(when(run.run_updated_at or run.run_created_at or run.received_at), className="small"),
                html.Td(_versions_cell(run, versions.get(run.id, []), requests)),
            ],
            id=f"cicd-run-row-{run.id}",
        )
        for run in runs
    ]
    return dbc.Table([header, html.Tbody(rows)], size="sm", hover=True, responsive=True, id="cicd-runs-table")


def _requests_by_version(
    db: Any, actor: Actor | None, projects: set[str]
) -> dict[tuple[str, str, str], list[PromotionRequest]]:
    """Promotion requests the user may view in ``projects``, by (project, model, version), newest first."""
    found: dict[tuple[str, str, str], list[PromotionRequest]] = {}
    for project in sorted(projects):
        if not has_permission(actor, Permission.VIEW_APPROVALS, project):
            continue
        for request in list_requests(db, actor, project=project, limit=MAX_REQUESTS_READ):
            found.setdefault((project, request.model, request.version), []).append(request)
    return found


def _empty_runs(project: str | None) -> html.P:
    scope = f" for project {project}" if project else ""
    return html.P(
        f"No GitHub workflow run received{scope}. Link the repository and its webhook secret on the "
        "Integrations page and add the webhook in GitHub; runs appear here as GitHub reports them.",
        className="text-body-secondary",
        id="cicd-runs-empty",
    )


@dash.callback(
    Output(ID.RUNS, "children"),
    Output(ID.RUNS_INFO, "children"),
    Output(ID.RUNS_PREVIOUS, "disabled"),
    Output(ID.RUNS_NEXT, "disabled"),
    Output(ID.RUNS_NEXT_CURSOR, "data"),
    Input(ID.PROJECT, "value"),
    Input(ID.RUNS_CURSORS, "data"),
    Input(ID.TICK, "n_intervals"),
)
@requires(Permission.VIEW_CICD)
def show_runs(project: str | None, cursors: list[int] | None, _tick: int | None) -> tuple[Any, ...]:
    """One page of workflow runs (newest first) with the versions they built and those versions' requests."""
    project = _optional(project)
    cursors = [c for c in (cursors or []) if isinstance(c, int) and not isinstance(c, bool)]
    actor = current_actor()
    if project is not None and not has_permission(actor, Permission.VIEW_CICD, project):
        return notice("danger", f"You may not view CI/CD of project {project}."), "", True, True, None
    with db_session() as db:
        rows = list_workflow_runs(
            db, actor, project=project, before_id=cursors[-1] if cursors else None, limit=RUNS_PAGE_SIZE + 1
        )
        runs = rows[:RUNS_PAGE_SIZE]
        versions = {run.id: versions_for_commit(db, run.project.slug, run.head_sha) for run in runs}
        requests = _requests_by_version(db, actor, {run.project.slug for run in runs if versions[run.id]})
        table = runs_table(runs, versions, requests) if runs else None
    next_cursor = runs[-1].id if len(rows) > RUNS_PAGE_SIZE else None
    if table is None:
        return _empty_runs(project), "", not cursors, True, None
    first = len(cursors) * RUNS_PAGE_SIZE + 1
    info = f"Page {len(cursors) + 1} · runs {first} to {first + len(runs) - 1}"
    return table, info, not cursors, next_cursor is None, next_cursor


@dash.callback(
    Output(ID.RUNS_CURSORS, "data", allow_duplicate=True),
    Input(ID.RUNS_NEXT, "n_clicks"),
    State(ID.RUNS_CURSORS, "data"),
    State(ID.RUNS_NEXT_CURSOR, "data"),
    prevent_initial_call=True,
)
@requires(Permission.VIEW_CICD)
def next_runs(n_clicks: int | None, cursors: list[int] | None, next_cursor: int | None) -> list[int]:
    """Older runs: remember where this page ended."""
    if not n_clicks or not isinstance(next_cursor, int):
        raise PreventUpdate
    return [*(cursors or []), next_cursor]


@dash.callback(
    Output(ID.RUNS_CURSORS, "data", allow_duplicate=True),
    Input(ID.RUNS_PREVIOUS, "n_clicks"),
    State(ID.RUNS_CURSORS, "data"),
    prevent_initial_call=True,
)
@requires(Permission.VIEW_CICD)
def previous_runs(n_clicks: int | None, cursors: list[int] | None) -> list[int]:
    """Newer runs: back to where the previous page started."""
    if not n_clicks or not cursors:
        raise PreventUpdate
    return list(cursors[:-1])

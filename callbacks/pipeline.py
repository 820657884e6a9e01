"""Pipeline page callbacks: the stage DAG, one stage's configuration form, edits and locks.

The DAG is a dash-cytoscape graph (served locally by Dash; it runs under the
studio's CSP without ``unsafe-eval``, checked in Chromium by the e2e tests). Node
colours follow the last run's status; a locked node gets a thick dark border.
A table lists the same stages for keyboard and screen-reader users.

Changes go through :mod:`jobs.pipelines`, which re-checks ``EDIT_PIPELINE`` /
``LOCK_PIPELINE`` on the project with the acting user and writes the audit log.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import datetime
from typing import Any

import dash
import dash_bootstrap_components as dbc
import dash_cytoscape as cyto
from dash import ALL, Input, Output, State, html
from dash.exceptions import PreventUpdate
from sqlalchemy.orm import Session

from app.auth import current_actor, db_session
from app.components.ids.pipeline import ID
from app.rbac import requires
from callbacks.projects import project_choice, refresh_after, run_change
from jobs.db.models import PIPELINE_STAGES
from jobs.permissions import Actor, Forbidden, Permission, has_permission
from jobs.pipelines import (
    STAGE_TITLES,
    FieldSpec,
    NodeView,
    config_as_text,
    lock_node,
    node_view,
    parse_form,
    pipeline_view,
    stage_fields,
    unlock_node,
    update_node_config,
)
from jobs.users import Conflict

STATUS_COLOURS = {
    "never_run": "#adb5bd",
    "running": "#0d6efd",
    "succeeded": "#198754",
    "failed": "#dc3545",
    "skipped": "#ffc107",
}
STATUS_LABELS = {
    "never_run": "never run",
    "running": "running",
    "succeeded": "succeeded",
    "failed": "failed",
    "skipped": "skipped",
}
_NODE_SPACING = 170

DAG_STYLESHEET: list[dict[str, Any]] = [
    {
        "selector": "node",
        "style": {
            "label": "data(label)",
            "text-wrap": "wrap",
            "text-valign": "bottom",
            "text-margin-y": 8,
            "font-size": 13,
            "width": 46,
            "height": 46,
            "background-color": STATUS_COLOURS["never_run"],
            "border-width": 2,
            "border-color": "#ffffff",
        },
    },
    *(
        {"selector": f".status-{status}", "style": {"background-color": colour}}
        for status, colour in STATUS_COLOURS.items()
    ),
    {
        "selector": ".incomplete",
        "style": {"border-style": "dashed", "border-color": "#6c757d", "border-width": 3},
    },
    # After .incomplete so a locked node always shows its lock border (solid, thick, dark).
    {
        "selector": ".locked",
        "style": {
            "border-width": 6,
            "border-style": "solid",
            "border-color": "#212529",
            "shape": "round-rectangle",
        },
    },
    {"selector": "node:selected", "style": {"overlay-color": "#0d6efd", "overlay-opacity": 0.25}},
    {
        "selector": "edge",
        "style": {
            "width": 2,
            "line-color": "#6c757d",
            "target-arrow-color": "#6c757d",
            "target-arrow-shape": "triangle",
            "curve-style": "bezier",
        },
    },
]


def dag_elements(nodes: list[NodeView]) -> list[dict[str, Any]]:
    """Cytoscape elements: one node per stage in canonical order, an edge between consecutive stages."""
    elements: list[dict[str, Any]] = []
    for index, node in enumerate(nodes):
        classes = [f"status-{node.last_status}" if node.last_status in STATUS_COLOURS else "status-never_run"]
        if node.locked:
            classes.append("locked")
        if not node.configured:
            classes.append("incomplete")
        label = f"{node.title}\n{STATUS_LABELS.get(node.last_status, node.last_status)}"
        if node.locked:
            label += " · locked"
        elements.append(
            {
                "data": {"id": node.stage, "label": label, "status": node.last_status, "locked": node.locked},
                "position": {"x": index * _NODE_SPACING, "y": 0},
                "classes": " ".join(classes),
            }
        )
    for source, target in itertools.pairwise(nodes):
        elements.append(
            {
                "data": {
                    "id": f"{source.stage}->{target.stage}",
                    "source": source.stage,
                    "target": target.stage,
                }
            }
        )
    return elements


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "never"


def _stage_table(nodes: list[NodeView]) -> dbc.Table:
    rows = [
        html.Tr(
            [
                html.Td(node.title),
                html.Td(
                    dbc.Badge(
                        STATUS_LABELS.get(node.last_status, node.last_status),
                        color=STATUS_COLOURS.get(node.last_status, STATUS_COLOURS["never_run"]),
                        class_name="text-dark" if node.last_status in ("never_run", "skipped") else "",
                    )
                ),
                html.Td(_when(node.last_run_at)),
                html.Td(f"locked by {node.locked_by or 'someone'}" if node.locked else "unlocked"),
                html.Td("configured" if node.configured else f"incomplete: {', '.join(node.problems)}"),
            ],
            id=f"pipeline-row-{node.stage}",
        )
        for node in nodes
    ]
    header = html.Thead(html.Tr([html.Th(t) for t in ("Stage", "Last run", "When", "Lock", "Configuration")]))
    return dbc.Table([header, html.Tbody(rows)], size="sm", hover=True, id="pipeline-stages")


def legend() -> list[Any]:
    """The colour key of the DAG."""
    swatches: list[Any] = [
        html.Span(
            [
                html.Span(
                    className="d-inline-block rounded-circle me-1",
                    style={"width": "0.8rem", "height": "0.8rem", "backgroundColor": colour},
                ),
                STATUS_LABELS[status],
            ],
            className="me-3",
        )
        for status, colour in STATUS_COLOURS.items()
    ]
    swatches.append(html.Span("square with a dark border: locked · dashed border: incomplete configuration"))
    return swatches


@dash.callback(
    Output(ID.PROJECT, "options"),
    Output(ID.PROJECT, "value"),
    Output(ID.STAGE, "options"),
    Output(ID.LEGEND, "children"),
    Input(ID.PROJECT, "id"),
    State(ID.PROJECT, "value"),
)
@requires(Permission.VIEW_PIPELINE)
def list_pipeline_projects(
    _component_id: str, selected: str | None
) -> tuple[list[dict[str, str]], str | None, list[dict[str, str]], list[Any]]:
    """Projects whose pipeline the user may view, the stages, and the DAG's colour key."""
    options, value = project_choice(Permission.VIEW_PIPELINE, selected)
    stages = [{"label": STAGE_TITLES[stage], "value": stage} for stage in PIPELINE_STAGES]
    return options, value, stages, legend()


def dag(nodes: list[NodeView]) -> cyto.Cytoscape:
    """The DAG as a freshly mounted graph with its elements and styles.

    Mounted whole rather than updated in place: a graph whose props change while the
    page is being left can run a redraw on a destroyed instance (a JavaScript error).
    """
    return cyto.Cytoscape(
        id=ID.DAG,
        elements=dag_elements(nodes),
        layout={"name": "preset", "fit": True, "padding": 40},
        stylesheet=DAG_STYLESHEET,
        style={"width": "100%", "height": "220px"},
        className="border rounded mb-3 bg-body",
        userZoomingEnabled=False,
        userPanningEnabled=False,
        boxSelectionEnabled=False,
        autoungrabify=True,
        wheelSensitivity=1,
    )


@dash.callback(
    Output(ID.DAG_CONTAINER, "children"),
    Output(ID.STAGE_TABLE, "children"),
    Input(ID.PROJECT, "value"),
    Input(ID.REFRESH, "data"),
)
@requires(Permission.VIEW_PIPELINE)
def show_pipeline(project: str | None, _refresh: int | None = None) -> tuple[Any, Any]:
    """The DAG and the stage table of one project's pipeline.

    Raises:
        PreventUpdate: without a project, or for one the user may not view.
    """
    if not project:
        raise PreventUpdate
    try:
        with db_session() as db:
            nodes = pipeline_view(db, current_actor(), project)
    except (Forbidden, Conflict):
        raise PreventUpdate from None
    if not nodes:
        return None, html.P("This project has no pipeline stages.", className="text-body-secondary")
    return dag(nodes), _stage_table(nodes)


@dash.callback(Output(ID.STAGE, "value"), Input(ID.DAG, "tapNodeData"), prevent_initial_call=True)
@requires(Permission.VIEW_PIPELINE)
def select_tapped_stage(node_data: dict[str, Any] | None) -> str:
    """Clicking a node of the DAG selects its stage."""
    stage = (node_data or {}).get("id")
    if stage not in PIPELINE_STAGES:
        raise PreventUpdate
    return stage


def _field_control(spec: FieldSpec, text: str, disabled: bool, problem: str | None) -> Any:
    control_id = {"type": ID.FIELD_TYPE, "name": spec.name}
    if spec.kind == "choice":
        options = [{"label": "(not set)", "value": ""}] if not spec.required else []
        options += [{"label": choice, "value": choice} for choice in spec.choices]
        control = dbc.Select(
            id=control_id,
            options=options,
            value=text if text in spec.choices else ("" if not spec.required else None),
            disabled=disabled,
            invalid=problem is not None,
            placeholder="Choose..." if spec.required else None,
        )
    else:
        control = dbc.Input(
            id=control_id,
            value=text,
            disabled=disabled,
            invalid=problem is not None,
            maxLength=4096,
            debounce=False,
        )
    label = f"{spec.label}{' *' if spec.required else ''}"
    return html.Div(
        [
            dbc.Label(label, class_name="mb-0 small fw-semibold"),
            control,
            dbc.FormFeedback(problem or "", type="invalid"),
            dbc.FormText(spec.help),
        ],
        className="mb-2",
    )


def _node_form(node: NodeView, disabled: bool, problems: dict[str, str]) -> list[Any]:
    texts = config_as_text(node.stage, node.config)
    return [
        _field_control(spec, texts[spec.name], disabled, problems.get(spec.name))
        for spec in stage_fields(node.stage)
    ]


def _node_info(node: NodeView) -> Any:
    facts = [
        ("Stage", node.title),
        ("Last run", f"{STATUS_LABELS.get(node.last_status, node.last_status)} ({_when(node.last_run_at)})"),
        ("Lock", f"locked by {node.locked_by or 'someone'}" if node.locked else "unlocked"),
        ("Last change", _when(node.updated_at)),
    ]
    items = []
    for term, value in facts:
        items += [html.Dt(term, className="col-sm-4"), html.Dd(value, className="col-sm-8 mb-1")]
    return html.Dl(items, className="row mb-2", id="pipeline-node-facts")


@dash.callback(
    Output(ID.NODE_INFO, "children"),
    Output(ID.NODE_FORM, "children"),
    Output(ID.NODE_VERSION, "data"),
    Output(ID.SAVE_BUTTON, "disabled"),
    Output(ID.LOCK_BUTTON, "disabled"),
    Output(ID.UNLOCK_BUTTON, "disabled"),
    Input(ID.PROJECT, "value"),
    Input(ID.STAGE, "value"),
    Input(ID.REFRESH, "data"),
)
@requires(Permission.VIEW_PIPELINE)
def show_node(
    project: str | None, stage: str | None, _refresh: int | None = None
) -> tuple[Any, list[Any], str | None, bool, bool, bool]:
    """Facts and configuration form of the selected stage; buttons enabled by permission and lock state.

    Raises:
        PreventUpdate: without a selection, or for a project the user may not view.
    """
    if not project or stage not in PIPELINE_STAGES:
        raise PreventUpdate
    actor = current_actor()
    try:
        with db_session() as db:
            node = node_view(db, actor, project, stage)
    except (Forbidden, Conflict):
        raise PreventUpdate from None
    may_edit = has_permission(actor, Permission.EDIT_PIPELINE, project) and not node.locked
    may_lock = has_permission(actor, Permission.LOCK_PIPELINE, project)
    # An empty configuration is the state of a new project: no field is marked wrong until someone saves.
    problems = node.problems if node.config else {}
    return (
        _node_info(node),
        _node_form(node, not may_edit, problems),
        node.updated_at.isoformat() if node.updated_at else None,
        not may_edit,
        not may_lock or node.locked,
        not may_lock or not node.locked,
    )


@dash.callback(
    Output(ID.NODE_MESSAGE, "children"),
    Output(ID.REFRESH, "data", allow_duplicate=True),
    Input(ID.SAVE_BUTTON, "n_clicks"),
    State(ID.PROJECT, "value"),
    State(ID.STAGE, "value"),
    State({"type": ID.FIELD_TYPE, "name": ALL}, "value"),
    State({"type": ID.FIELD_TYPE, "name": ALL}, "id"),
    State(ID.NODE_VERSION, "data"),
    State(ID.REFRESH, "data"),
    prevent_initial_call=True,
)
@requires(Permission.EDIT_PIPELINE)
def save_node_clicked(
    n_clicks: int | None,
    project: str | None,
    stage: str | None,
    values: list[Any],
    field_ids: list[dict[str, str]],
    version: str | None,
    refresh: int | None,
) -> tuple[Any, int]:
    """Validate the form and save the stage's configuration (refused while the stage is locked)."""
    if not n_clicks or not project or stage not in PIPELINE_STAGES:
        raise PreventUpdate
    raw = {field_id["name"]: value for field_id, value in zip(field_ids or [], values or [], strict=False)}
    try:
        expected = datetime.fromisoformat(version) if version else None
    except ValueError:
        expected = None

    def change(db: Session, actor: Actor) -> str:
        config = parse_form(stage, raw)
        update_node_config(db, actor, project, stage, config, expected_updated_at=expected)
        return f"{STAGE_TITLES[stage]} configuration saved."

    outcome = run_change(change)  # invalid fields, a lock or a stale form come back as a danger notice
    return outcome, refresh_after(outcome, refresh)


def _lock_clicked(
    locking: bool,
    n_clicks: int | None,
    project: str | None,
    stage: str | None,
    reason: str | None,
    refresh: int | None,
) -> tuple[Any, int]:
    """Lock (``locking``) or unlock the selected stage: the message and, on success, the next refresh."""
    if not n_clicks or not project or stage not in PIPELINE_STAGES:
        raise PreventUpdate

    def change(db: Session, actor: Actor) -> str:
        if locking:
            lock_node(db, actor, project, stage, reason=reason or "")
            return f"{STAGE_TITLES[stage]} locked: its configuration cannot change until it is unlocked."
        unlock_node(db, actor, project, stage, reason=reason or "")
        return f"{STAGE_TITLES[stage]} unlocked."

    outcome = run_change(change)
    return outcome, refresh_after(outcome, refresh)


def _lock_callback(button: str) -> Callable[[Callable[..., Any]], Any]:
    """``dash.callback`` of the Lock or Unlock ``button`` (the stage form in, message and refresh out)."""
    return dash.callback(
        Output(ID.NODE_MESSAGE, "children", allow_duplicate=True),
        Output(ID.REFRESH, "data", allow_duplicate=True),
        Input(button, "n_clicks"),
        State(ID.PROJECT, "value"),
        State(ID.STAGE, "value"),
        State(ID.LOCK_REASON, "value"),
        State(ID.REFRESH, "data"),
        prevent_initial_call=True,
    )


@_lock_callback(ID.LOCK_BUTTON)
@requires(Permission.LOCK_PIPELINE)
def lock_clicked(
    n_clicks: int | None, project: str | None, stage: str | None, reason: str | None, refresh: int | None
) -> tuple[Any, int]:
    """Lock the selected stage."""
    return _lock_clicked(True, n_clicks, project, stage, reason, refresh)


@_lock_callback(ID.UNLOCK_BUTTON)
@requires(Permission.LOCK_PIPELINE)
def unlock_clicked(
    n_clicks: int | None, project: str | None, stage: str | None, reason: str | None, refresh: int | None
) -> tuple[Any, int]:
    """Unlock the selected stage."""
    return _lock_clicked(False, n_clicks, project, stage, reason, refresh)

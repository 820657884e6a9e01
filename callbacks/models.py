"""Models page callbacks: the MLflow registry view of one project.

For each registered model ``<project>.<model>``: its versions (newest first, at
most :data:`MAX_VERSIONS`), the aliases pointing at each and the environments
they stand for, hold-out metrics of the training run, the run id, who trained
it, the artifact digest and a summary of the reference profile written at
training time. The latest deployment per environment comes from the studio's
own deployment records.

Reading the registry needs ``VIEW_MODELS`` on the project. The registry is read
with the settings' tracking URI; a SQLite store that does not exist yet means no
model was trained (it is not created by looking at this page).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, html
from dash.exceptions import PreventUpdate
from sqlalchemy import select

from app.auth import current_actor, db_session, services
from app.rbac import requires
from callbacks.projects import notice, project_options
from jobs import registry
from jobs.db.governance import Deployment
from jobs.db.models import ENVIRONMENT_NAMES, Project
from jobs.integrations import check_mlflow, first_line
from jobs.permissions import Permission, has_permission

# Component ids of the Models page (pages/models.py uses the same constants).
PROJECT = "models-project"
REGISTRY = "models-registry"

MAX_VERSIONS = 20
DIGEST_SHOWN = 12


@dataclass(frozen=True)
class VersionRow:
    """What the page shows of one model version.

    Attributes:
        version: Version number (text).
        aliases: Aliases pointing at it.
        environments: Environments named by those aliases (``dev``, ``staging``, ``prod``).
        metrics: Hold-out metrics of the training run.
        run_id: Training run id.
        created_by: Who trained it.
        created_at: Registration time, ``YYYY-MM-DD HH:MM UTC``.
        artifact_digest: SHA-256 of the artifact files.
        profile: One-line summary of the reference profile (or why there is none).
    """

    version: str
    aliases: tuple[str, ...]
    environments: tuple[str, ...]
    metrics: dict[str, float]
    run_id: str | None
    created_by: str | None
    created_at: str
    artifact_digest: str | None
    profile: str


@dataclass(frozen=True)
class ModelEntry:
    """One registered model of the project with its versions, newest first."""

    model: str
    registered_name: str
    versions: list[VersionRow] = field(default_factory=list)
    deployments: dict[str, str] = field(default_factory=dict)


def _registry_exists(tracking_uri: str) -> bool:
    prefix = "sqlite:///"
    if tracking_uri.startswith(prefix) and tracking_uri != prefix + ":memory:":
        return Path(tracking_uri[len(prefix) :]).exists()
    return True


def profile_summary(store: Any, project: str, model: str, version: str) -> str:
    """One line about the reference profile of a version, or why there is none."""
    from jobs.training import TrainingError, read_reference_profile

    try:
        profile = read_reference_profile(store, project, model, version)
    except TrainingError as error:
        return str(error)
    except Exception as error:  # noqa: BLE001 - an unreadable profile must not hide the registry view
        return f"reference profile unreadable: {first_line(error)}"
    kinds = [column.kind for column in profile.columns]
    with_missing = sum(1 for column in profile.columns if column.missing)
    return (
        f"{profile.rows} rows · {len(kinds)} columns ({kinds.count('numeric')} numeric, "
        f"{kinds.count('categorical')} categorical) · {with_missing} with missing values"
    )


def registry_entries(project: str, settings: Any) -> list[ModelEntry]:
    """The registered models of ``project`` and their versions, read from MLflow (no permission check).

    Raises:
        Exception: whatever MLflow raises when the registry cannot be read.
    """
    from analytics.store import ParquetStore

    tracking_uri = settings.mlflow_tracking_uri
    registry_uri = settings.mlflow_registry_uri
    if not _registry_exists(registry_uri or tracking_uri):
        return []
    for uri in {tracking_uri, registry_uri or tracking_uri}:
        if urlsplit(uri).scheme in ("http", "https"):
            # MLflow's client retries an unreachable server for minutes; one quick probe answers first.
            probe = check_mlflow(uri)
            if not probe.ok:
                raise ConnectionError(probe.error or probe.summary)
    client = registry.client(tracking_uri, registry_uri)
    # LIKE treats '_' as a wildcard: the prefix check below keeps exactly this project's models.
    registered = client.search_registered_models(filter_string=f"name LIKE '{project}.%'")
    names = sorted(m.name for m in registered if m.name.startswith(f"{project}."))
    entries: list[ModelEntry] = []
    store = ParquetStore(settings.store_config())
    try:
        for name in names:
            model = name[len(project) + 1 :]
            versions = registry.list_versions(name, tracking_uri=tracking_uri, registry_uri=registry_uri)
            rows = []
            for info in sorted(versions, key=lambda v: int(v.version), reverse=True)[:MAX_VERSIONS]:
                try:
                    metrics = dict(client.get_run(info.run_id).data.metrics) if info.run_id else {}
                except Exception:  # noqa: BLE001 - a deleted run leaves the version listed without metrics
                    metrics = {}
                rows.append(
                    VersionRow(
                        version=info.version,
                        aliases=info.aliases,
                        environments=tuple(a for a in info.aliases if a in ENVIRONMENT_NAMES),
                        metrics=metrics,
                        run_id=info.run_id,
                        created_by=info.created_by,
                        created_at=info.created_at.strftime("%Y-%m-%d %H:%M UTC"),
                        artifact_digest=info.artifact_digest,
                        profile=profile_summary(store, project, model, info.version),
                    )
                )
            entries.append(ModelEntry(model=model, registered_name=name, versions=rows))
    finally:
        store.close()
    return entries


def latest_deployments(project: str) -> dict[str, dict[str, str]]:
    """Model -> environment -> "version N (status)" of the newest deployment record."""
    with db_session() as db:
        rows = db.execute(
            select(Deployment.model, Deployment.environment, Deployment.version, Deployment.status)
            .join(Project, Project.id == Deployment.project_id)
            .where(Project.slug == project)
            .order_by(Deployment.created_at, Deployment.id)
        ).all()
    latest: dict[str, dict[str, str]] = {}
    for model, environment, version, status in rows:
        latest.setdefault(model, {})[environment] = f"version {version} ({status})"
    return latest


def _metrics_text(metrics: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.4g}" for name, value in sorted(metrics.items())) or "none logged"


def _model_card(entry: ModelEntry, deployed: dict[str, str]) -> dbc.Card:
    header = html.Thead(
        html.Tr(
            [
                html.Th(t)
                for t in (
                    "Version",
                    "Aliases",
                    "Environments",
                    "Metrics",
                    "Training run",
                    "Created by",
                    "Registered",
                    "Artifact digest",
                    "Reference profile",
                )
            ]
        )
    )
    rows = [
        html.Tr(
            [
                html.Td(row.version),
                html.Td(", ".join(row.aliases) or "none"),
                html.Td(", ".join(row.environments) or "none"),
                html.Td(_metrics_text(row.metrics), className="small"),
                html.Td(html.Code(row.run_id or "unknown")),
                html.Td(row.created_by or "unknown"),
                html.Td(row.created_at, className="text-nowrap"),
                html.Td(
                    html.Code(row.artifact_digest[:DIGEST_SHOWN] + "…", title=row.artifact_digest)
                    if row.artifact_digest
                    else "missing"
                ),
                html.Td(row.profile, className="small"),
            ]
        )
        for row in entry.versions
    ]
    deployments = (
        html.P(
            "Latest deployments: " + "; ".join(f"{env}: {text}" for env, text in sorted(deployed.items())),
            className="small mb-2",
        )
        if deployed
        else html.P("No deployment recorded yet.", className="small text-body-secondary mb-2")
    )
    return dbc.Card(
        [
            dbc.CardHeader(
                [
                    html.Strong(entry.model),
                    html.Span(
                        f"  registered as {entry.registered_name}", className="small text-body-secondary"
                    ),
                ]
            ),
            dbc.CardBody(
                [
                    deployments,
                    dbc.Table([header, html.Tbody(rows)], size="sm", responsive=True, class_name="mb-0")
                    if rows
                    else html.P("No version registered.", className="text-body-secondary"),
                ]
            ),
        ],
        class_name="mb-3",
        id=f"model-card-{entry.model}",
    )


@dash.callback(
    Output(PROJECT, "options"),
    Output(PROJECT, "value"),
    Input(PROJECT, "id"),
    State(PROJECT, "value"),
)
@requires(Permission.VIEW_MODELS)
def list_model_projects(_component_id: str, selected: str | None) -> tuple[list[dict[str, str]], str | None]:
    """Projects whose models the user may view."""
    options = project_options(Permission.VIEW_MODELS)
    values = [option["value"] for option in options]
    return options, selected if selected in values else (values[0] if values else None)


@dash.callback(Output(REGISTRY, "children"), Input(PROJECT, "value"))
@requires(Permission.VIEW_MODELS)
def show_registry(project: str | None) -> Any:
    """Registered models of the project, their versions and deployments.

    Raises:
        PreventUpdate: without a project, or for one the user may not view.
    """
    if not project or not has_permission(current_actor(), Permission.VIEW_MODELS, project):
        raise PreventUpdate
    with db_session() as db:
        if db.scalar(select(Project.id).where(Project.slug == project)) is None:
            raise PreventUpdate
    try:
        entries = registry_entries(project, services().settings)
    except Exception as error:  # noqa: BLE001 - an unreachable registry is a message, not a crash
        return notice("danger", f"The model registry cannot be read: {first_line(error)}")
    if not entries:
        return html.P(
            "No model of this project is registered yet: train one with python -m jobs train.",
            className="text-body-secondary",
            id="models-empty",
        )
    deployed = latest_deployments(project)
    return [_model_card(entry, deployed.get(entry.model, {})) for entry in entries]

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

Two long jobs start here as Dash background callbacks (progress bar, cancel
button): training a new version (``TRAIN_MODELS``, :func:`jobs.training.train_model`)
and a monitoring backfill of a model over a date range (``RUN_BACKFILL``,
:func:`jobs.monitor.run_monitor` with ``backfill=True``). They run in another
process (see ``app.background_jobs``), never in the web worker.
The request that starts one checks the permission (the RBAC guard and the wrapper
``app.rbac`` puts around background callbacks), the job function checks it again
on the project, and the job itself checks it a third time with the acting user
handed over explicitly. Cancelling stops the job's process: a backfill keeps the
files it already replaced (each write is atomic); training cannot be cancelled
once the version is being registered, so the cancel button is disabled from then on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, html
from dash.exceptions import PreventUpdate
from flask import has_app_context
from sqlalchemy import select

from app.auth import current_actor, db_session, services
from app.background_jobs import current_job_settings
from app.components.ids.models import ALL_ENVIRONMENTS, ID
from app.rbac import acting_actor, requires
from app.settings import Settings, load_settings
from callbacks.projects import notice, project_choice
from jobs import registry
from jobs.contracts import key_segment_problem
from jobs.db import make_engine, make_session_factory
from jobs.db.governance import Deployment
from jobs.db.models import ENVIRONMENT_NAMES, Project
from jobs.integrations import check_mlflow, first_line
from jobs.permissions import Actor, Forbidden, Permission, has_permission

log = logging.getLogger(__name__)


MAX_VERSIONS = 20
DIGEST_SHOWN = 12
# Training reports "registering" at 0.85: from then on the version exists and the job must finish.
TRAINING_POINT_OF_NO_RETURN = 0.85
MAX_BACKFILL_DAYS = 366
SHOWN = {"display": "block"}
HIDDEN = {"display": "none"}


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
    Output(ID.PROJECT, "options"),
    Output(ID.PROJECT, "value"),
    Input(ID.PROJECT, "id"),
    State(ID.PROJECT, "value"),
)
@requires(Permission.VIEW_MODELS)
def list_model_projects(_component_id: str, selected: str | None) -> tuple[list[dict[str, str]], str | None]:
    """Projects whose models the user may view."""
    return project_choice(Permission.VIEW_MODELS, selected)


@dash.callback(
    Output(ID.REGISTRY, "children"), Input(ID.PROJECT, "value"), Input(ID.TRAIN_RESULT, "children")
)
@requires(Permission.VIEW_MODELS)
def show_registry(project: str | None, _trained: Any = None) -> Any:
    """Registered models of the project, their versions and deployments (again after a training job).

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


# ---------------------------------------------------------------------------- long jobs


@dash.callback(
    Output(ID.TRAIN_CARD, "style"),
    Output(ID.BACKFILL_CARD, "style"),
    Input(ID.PROJECT, "value"),
)
@requires(Permission.VIEW_MODELS)
def show_long_job_forms(project: str | None) -> tuple[dict[str, str], dict[str, str]]:
    """Show the training and backfill forms to users who may start them on the project (cosmetic)."""
    actor = current_actor()
    if not project:
        return HIDDEN, HIDDEN
    train = has_permission(actor, Permission.TRAIN_MODELS, project)
    backfill = has_permission(actor, Permission.RUN_BACKFILL, project)
    return (SHOWN if train else HIDDEN), (SHOWN if backfill else HIDDEN)


def job_settings() -> Settings:
    """The settings a background job runs with.

    Inside a request, the app's. A diskcache job gets the settings of the studio that started
    it from its manager (:func:`app.background_jobs.current_job_settings`); a Celery worker has
    neither and reads the same ``MMS_*`` environment as the studio.
    """
    if has_app_context():
        return services().settings
    handed = current_job_settings()
    return handed if handed is not None else load_settings()


def progress_reporter(
    set_progress: Callable[[tuple[Any, ...]], None], *, point_of_no_return: float | None = None
) -> Callable[[str, float], None]:
    """Turn a job's ``progress(stage, fraction)`` into the progress outputs of a background callback.

    The outputs are the bar's value (percent), its label and whether the cancel button is
    disabled. Cancel is enabled by the first report rather than when the job is asked for:
    only once the job has reported does the browser hold the handle a cancel needs.

    Args:
        set_progress: What Dash passes a background callback with ``progress=`` outputs.
        point_of_no_return: From this fraction on the cancel button is disabled again (``None``: never).
    """

    def report(stage: str, fraction: float) -> None:
        percent = max(0, min(100, round(float(fraction) * 100)))
        locked = point_of_no_return is not None and float(fraction) >= point_of_no_return
        set_progress((percent, f"{stage} · {percent}%", locked))

    return report


def _job_actor(permission: Permission, project: str | None) -> Actor:
    """The user the job acts for, if they hold ``permission`` on ``project``.

    Raises:
        Forbidden: otherwise (the message is shown; nothing ran).
    """
    actor = acting_actor()
    if not project or not has_permission(actor, permission, project):
        who = actor.username if actor else "anonymous"
        raise Forbidden(f"{who} may not {permission.value} on project {project!r}")
    assert actor is not None
    return actor


def _model_name(raw: str | None) -> str:
    model = (raw or "").strip()
    if not model:
        raise ValueError("enter the model name")
    problem = key_segment_problem(model)
    if problem:
        raise ValueError(f"model name: {problem}")
    return model


def train_version(
    actor: Actor, settings: Settings, project: str, model: str, report: Callable[[str, float], None]
) -> dbc.Alert:
    """Run the training job for ``actor`` and say how it went (its errors become the message)."""
    from threadpoolctl import threadpool_limits

    from analytics.store import ParquetStore
    from jobs.training import train_model

    store = ParquetStore(settings.store_config())
    # A fresh engine: connections inherited from the web worker's pool must not be shared.
    engine = make_engine(settings.database_url)
    try:
        # The job is a forked process (of the fork server, or of a Celery worker): GNU OpenMP's thread
        # pool does not survive a fork if the parent ever started it (the estimator's parallel loops
        # would wait forever on threads that are not there), so the job fits with one OpenMP thread.
        with threadpool_limits(limits=1, user_api="openmp"):
            result = train_model(
                actor,
                project=project,
                model=model,
                store=store,
                tracking_uri=settings.mlflow_tracking_uri,
                registry_uri=settings.mlflow_registry_uri,
                session_factory=make_session_factory(engine),
                progress=report,
            )
    except Forbidden as error:
        return notice("danger", str(error), ID.TRAIN_RESULT + "-message")
    except Exception as error:  # the job's message is the answer, never a crash
        log.warning("training %s/%s failed", project, model, exc_info=True)
        return notice("danger", f"Training failed: {first_line(error)}", ID.TRAIN_RESULT + "-message")
    finally:
        store.close()
        engine.dispose()
    metrics = ", ".join(f"{name} {value:.4g}" for name, value in sorted(result.metrics.items()))
    return notice(
        "success",
        f"Version {result.version} of {result.registered_model} registered from run {result.run_id}"
        f" ({metrics or 'no metric'}).",
        ID.TRAIN_RESULT + "-message",
    )


def _background_job(start: str, cancel: str, progress: str) -> dict[str, Any]:
    """``dash.callback`` arguments of a long job: runs in the background, start button disabled while
    it runs, progress bar value and label, and the cancel button (enabled by the first progress report:
    only then does the browser hold the job handle a cancel needs)."""
    return {
        "background": True,
        "running": [(Output(start, "disabled"), True, False)],
        "progress": [Output(progress, "value"), Output(progress, "label"), Output(cancel, "disabled")],
        "progress_default": [0, "", True],
        "cancel": [Input(cancel, "n_clicks")],
        "prevent_initial_call": True,
    }


@dash.callback(
    Output(ID.TRAIN_RESULT, "children"),
    Input(ID.TRAIN_START, "n_clicks"),
    State(ID.PROJECT, "value"),
    State(ID.TRAIN_MODEL, "value"),
    **_background_job(ID.TRAIN_START, ID.TRAIN_CANCEL, ID.TRAIN_PROGRESS),
)
@requires(Permission.TRAIN_MODELS)
def train_new_version(
    set_progress: Callable[[tuple[Any, ...]], None],
    n_clicks: int | None,
    project: str | None,
    model: str | None,
) -> dbc.Alert:
    """Train a new version of the named model in a background job, reporting its progress."""
    if not n_clicks:
        raise PreventUpdate
    try:
        actor = _job_actor(Permission.TRAIN_MODELS, project)
        name = _model_name(model)
    except (Forbidden, ValueError) as error:
        return notice("danger", str(error), ID.TRAIN_RESULT + "-message")
    report = progress_reporter(set_progress, point_of_no_return=TRAINING_POINT_OF_NO_RETURN)
    report("starting", 0.0)
    assert project is not None
    return train_version(actor, job_settings(), project, name, report)


def _date(raw: str | None, what: str) -> date:
    if not raw:
        raise ValueError(f"choose the {what} date")
    try:
        return date.fromisoformat(str(raw)[:10])
    except ValueError:
        raise ValueError(f"the {what} date {raw!r} is not a date (YYYY-MM-DD)") from None


def backfill_request(
    project: str, model: str | None, environment: str | None, since: str | None, until: str | None
) -> Any:
    """The :class:`jobs.monitor.MonitorRequest` of a backfill, from the form's values.

    Raises:
        ValueError: for a missing or malformed field, or a range over :data:`MAX_BACKFILL_DAYS`.
    """
    from jobs.monitor import MonitorRequest

    first, last = _date(since, "first"), _date(until, "last")
    if last < first:
        raise ValueError(f"the range ends ({last}) before it starts ({first})")
    if (last - first).days + 1 > MAX_BACKFILL_DAYS:
        raise ValueError(f"a backfill covers at most {MAX_BACKFILL_DAYS} days; split the range")
    if environment in (None, "", ALL_ENVIRONMENTS):
        environment = None
    elif environment not in ENVIRONMENT_NAMES:
        raise ValueError(f"environment must be one of {', '.join(ENVIRONMENT_NAMES)} or all")
    return MonitorRequest(
        project=project,
        model=_model_name(model),
        environment=environment,
        since=first,
        until=last,
        backfill=True,
    )


def run_backfill(actor: Actor, settings: Settings, request: Any, report: Callable[[str, float], None]) -> Any:
    """Run the monitoring backfill for ``actor`` and say how it went."""
    from analytics.store import ParquetStore
    from jobs.monitor import run_monitor

    store = ParquetStore(settings.store_config())
    try:
        summary = run_monitor(store, request, actor=actor, progress=report)
    except Forbidden as error:
        return notice("danger", str(error), ID.BACKFILL_RESULT + "-message")
    except Exception as error:  # the job's message is the answer, never a crash
        log.warning("backfill of %s failed", request, exc_info=True)
        return notice("danger", f"Backfill failed: {first_line(error)}", ID.BACKFILL_RESULT + "-message")
    finally:
        store.close()
    report("done", 1.0)
    return dbc.Alert(
        [
            html.Strong(f"{summary.computed_dates} date(s) recomputed."),
            html.Pre(summary.to_text(), className="small mb-0 mt-2"),
        ],
        color="success" if summary.ok else "warning",
        class_name="py-2 mb-2",
        id=ID.BACKFILL_RESULT + "-message",
    )


@dash.callback(
    Output(ID.BACKFILL_RESULT, "children"),
    Input(ID.BACKFILL_START, "n_clicks"),
    State(ID.PROJECT, "value"),
    State(ID.BACKFILL_MODEL, "value"),
    State(ID.BACKFILL_ENVIRONMENT, "value"),
    State(ID.BACKFILL_SINCE, "value"),
    State(ID.BACKFILL_UNTIL, "value"),
    **_background_job(ID.BACKFILL_START, ID.BACKFILL_CANCEL, ID.BACKFILL_PROGRESS),
)
@requires(Permission.RUN_BACKFILL)
def backfill_monitoring(
    set_progress: Callable[[tuple[Any, ...]], None],
    n_clicks: int | None,
    project: str | None,
    model: str | None,
    environment: str | None,
    since: str | None,
    until: str | None,
) -> Any:
    """Recompute the monitoring metrics of a model over a date range in a background job."""
    if not n_clicks:
        raise PreventUpdate
    try:
        actor = _job_actor(Permission.RUN_BACKFILL, project)
        assert project is not None
        request = backfill_request(project, model, environment, since, until)
    except (Forbidden, ValueError) as error:  # MonitorError is a ValueError
        return notice("danger", str(error), ID.BACKFILL_RESULT + "-message")
    report = progress_reporter(set_progress)
    report("starting", 0.0)
    return run_backfill(actor, job_settings(), request, report)

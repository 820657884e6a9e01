"""The demo workspace from nothing: ``python -m jobs demo [--if-empty]`` (``make run`` calls it).

:func:`build_demo_workspace` takes an empty (or partly built) studio to a workspace that shows
everything the studio does:

1. migrates the metadata database and seeds the demo accounts and projects (:mod:`jobs.seed`);
2. writes the demo training sets and 90 days of traffic and late labels (:mod:`jobs.demo_data`);
3. trains and registers each demo model in MLflow, acting as the seeded ML engineer
   (:func:`jobs.training.train_model`), and points one alias per environment (``prod``,
   ``staging``) at the version that serves the traffic;
4. runs the monitoring job over everything (:func:`jobs.monitor.run_monitor`);
5. calls the ``after_monitor`` hooks in order, each with the workspace built so far (the alert rules
   and their first evaluation plug in here; see :func:`default_after_monitor`).

Every step is idempotent: a rerun rewrites the same data partitions, reuses the model versions
already registered (re-writing a missing reference profile from the same training data) and
recomputes nothing the monitor already has. ``--if-empty`` does nothing at all when the store
already holds inference logs, so ``make run`` never touches a real workspace.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from analytics.store import ParquetStore
from jobs import registry
from jobs.contracts import INFERENCE_LOGS, REFERENCE_PROFILES, segment_columns
from jobs.demo_data import DEMO_VERSION, DemoModel, DemoScenario, generate_demo_data
from jobs.monitor import MonitorRequest, MonitorSummary, run_monitor
from jobs.permissions import Actor

DEMO_ACTOR = "mlengineer"
"""The seeded account that trains the demo models (an ML engineer on every demo project)."""

DEMO_TRAINING = {"max_iter": 50}
"""Training options of the demo models: quick to fit, still a good model on the demo data."""

Progress = Callable[[str, float], None]


class DemoError(RuntimeError):
    """The demo workspace cannot be built; the message says why."""


@dataclass(frozen=True)
class DemoWorkspace:
    """What :func:`build_demo_workspace` did.

    Attributes:
        data_uri: Root of the Parquet store.
        skipped: ``True`` when ``if_empty`` found inference logs and nothing was done.
        scenario: The demo manifest (days, incidents, row counts); ``None`` when skipped.
        accounts_created: Usernames seeded by this call (empty when users existed already).
        versions: Registered model name -> version serving the demo traffic.
        trained: Registered model names trained by this call (the others were reused).
        aliases: Registered model name -> {environment alias: version}.
        monitor: Summary of the monitoring run; ``None`` when skipped.
        timings: Seconds spent per step.
    """

    data_uri: str
    skipped: bool = False
    scenario: DemoScenario | None = None
    accounts_created: tuple[str, ...] = ()
    versions: Mapping[str, str] = field(default_factory=dict)
    trained: tuple[str, ...] = ()
    aliases: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    monitor: MonitorSummary | None = None
    timings: Mapping[str, float] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        """Total seconds of the steps."""
        return sum(self.timings.values())


AfterMonitor = Callable[[DemoWorkspace, Any], None]
"""A hook run after the monitor: ``hook(workspace, context)`` where ``context`` is :class:`DemoContext`."""


@dataclass(frozen=True)
class DemoContext:
    """What an ``after_monitor`` hook may use besides the workspace.

    Attributes:
        store: The Parquet store.
        session_factory: Session factory of the migrated, seeded metadata database.
        tracking_uri: MLflow tracking URI.
        registry_uri: MLflow registry URI (``None``: the tracking URI).
        actor: The seeded ML engineer the demo acts as.
        now: The time the demo ran "at".
    """

    store: ParquetStore
    session_factory: Any
    tracking_uri: str
    registry_uri: str | None
    actor: Actor
    now: datetime


def default_after_monitor() -> list[AfterMonitor]:
    """The hooks ``python -m jobs demo`` runs after the monitor, in order.

    :func:`jobs.alerts.install_demo_alerts`: the demo's alert rules (as the seeded Monitoring Team
    account) and their first evaluation over the monitored period, so the injected incidents open
    alerts. Further ``hook(workspace, context)`` callables go here.
    """
    from jobs.alerts import install_demo_alerts

    return [install_demo_alerts]


def build_demo_workspace(
    settings: Any = None,
    *,
    store: ParquetStore | None = None,
    database_url: str | None = None,
    tracking_uri: str | None = None,
    registry_uri: str | None = None,
    days: int = 90,
    seed: int = 7,
    start_date: date | None = None,
    volume: float = 1.0,
    training_rows: int = 20_000,
    training: Mapping[str, Any] | None = None,
    if_empty: bool = False,
    now: datetime | None = None,
    after_monitor: Sequence[AfterMonitor] = (),
    progress: Progress | None = None,
) -> DemoWorkspace:
    """Build the demo workspace (see the module doc).

    Either pass ``settings`` (:class:`app.settings.Settings`) or the store, database URL and MLflow
    tracking URI explicitly; explicit arguments win over the settings.

    Args:
        settings: Studio settings.
        store: The Parquet store (from ``settings.store_config()`` when omitted).
        database_url: Metadata database URL.
        tracking_uri: MLflow tracking URI.
        registry_uri: MLflow registry URI (default: the tracking URI).
        days: Days of traffic.
        seed: Seed of the demo data.
        start_date: First day of traffic; by default ``days`` days before ``now``, so the traffic ends
            yesterday and the newest days are still waiting for labels.
        volume: Multiplier of the daily request counts.
        training_rows: Rows of each model's training set.
        training: Training options (:class:`jobs.training.TrainConfig` fields); :data:`DEMO_TRAINING`
            by default.
        if_empty: Do nothing when the store already holds inference logs.
        now: The current time (UTC) the demo runs at.
        after_monitor: Hooks called after the monitoring run, in order.
        progress: Optional ``progress(stage, fraction)`` callback.

    Returns:
        What was done.

    Raises:
        DemoError: if the seeded ML engineer is missing or a model cannot serve the demo traffic.
        jobs.training.TrainingError: if training fails.
    """
    now = _utc(now or datetime.now(UTC))
    database_url = database_url or (settings.database_url if settings is not None else None)
    tracking_uri = tracking_uri or (settings.mlflow_tracking_uri if settings is not None else None)
    if registry_uri is None and settings is not None:
        registry_uri = settings.mlflow_registry_uri
    if not database_url or not tracking_uri:
        raise DemoError("the demo needs settings, or a database URL and an MLflow tracking URI")
    owned_store = store is None
    if store is None:
        if settings is None:
            raise DemoError("the demo needs settings or a store")
        store = ParquetStore(settings.store_config())
    try:
        return _build(
            store,
            database_url,
            tracking_uri,
            registry_uri,
            days=days,
            seed=seed,
            start_date=start_date or (now.date() - timedelta(days=days)),
            volume=volume,
            training_rows=training_rows,
            training=dict(DEMO_TRAINING if training is None else training),
            if_empty=if_empty,
            now=now,
            after_monitor=after_monitor,
            progress=progress,
        )
    finally:
        if owned_store:
            store.close()


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _build(
    store: ParquetStore,
    database_url: str,
    tracking_uri: str,
    registry_uri: str | None,
    *,
    days: int,
    seed: int,
    start_date: date,
    volume: float,
    training_rows: int,
    training: Mapping[str, Any],
    if_empty: bool,
    now: datetime,
    after_monitor: Sequence[AfterMonitor],
    progress: Progress | None,
) -> DemoWorkspace:
    from jobs.db import make_engine, make_session_factory, session_scope
    from jobs.db.migrate import upgrade

    def report(stage: str, fraction: float) -> None:
        if progress is not None:
            progress(stage, fraction)

    if if_empty and store.list_files(INFERENCE_LOGS):
        report("the workspace already has inference logs: nothing to do", 1.0)
        return DemoWorkspace(data_uri=store.root, skipped=True)
    timings: dict[str, float] = {}
    clock = time.monotonic()

    report("migrating and seeding the metadata database", 0.0)
    upgrade(database_url)
    engine = make_engine(database_url)
    try:
        session_factory = make_session_factory(engine)
        accounts, actor = _seed(session_factory, session_scope)
        timings["seed"] = time.monotonic() - clock

        clock = time.monotonic()
        report("writing the demo training sets, traffic and labels", 0.05)
        scenario = generate_demo_data(
            store, start_date, days, seed, volume=volume, training_rows=training_rows
        )
        timings["data"] = time.monotonic() - clock

        clock = time.monotonic()
        versions: dict[str, str] = {}
        trained: list[str] = []
        aliases: dict[str, dict[str, str]] = {}
        client = registry.client(tracking_uri, registry_uri)
        for index, model in enumerate(scenario.models):
            report(f"training {model.project}/{model.model}", 0.3 + 0.3 * index / len(scenario.models))
            name = registry.registered_model_name(model.project, model.model)
            held = _train_if_needed(
                store, session_factory, model, actor, tracking_uri, registry_uri, training
            )
            if held is None:
                trained.append(name)
                held = ()
            versions[name] = DEMO_VERSION
            for environment in scenario.environments:
                if environment not in held:  # one alias per environment, on the version serving it
                    client.set_registered_model_alias(
                        name, registry.validate_alias(environment), DEMO_VERSION
                    )
            aliases[name] = dict.fromkeys(scenario.environments, DEMO_VERSION)
        timings["train"] = time.monotonic() - clock

        clock = time.monotonic()
        report("monitoring every model, environment and day", 0.6)
        summary = run_monitor(store, MonitorRequest(), now=now)
        timings["monitor"] = time.monotonic() - clock

        workspace = DemoWorkspace(
            data_uri=store.root,
            scenario=scenario,
            accounts_created=tuple(accounts),
            versions=versions,
            trained=tuple(trained),
            aliases=aliases,
            monitor=summary,
            timings=timings,
        )
        context = DemoContext(store, session_factory, tracking_uri, registry_uri, actor, now)
        for hook in after_monitor:
            clock = time.monotonic()
            report(f"after monitor: {getattr(hook, '__name__', 'hook')}", 0.95)
            hook(workspace, context)
            timings[f"after_monitor:{getattr(hook, '__name__', 'hook')}"] = time.monotonic() - clock
        report("demo workspace ready", 1.0)
        return workspace
    finally:
        engine.dispose()


def _seed(session_factory: Any, session_scope: Any) -> tuple[list[str], Actor]:
    """Seed the demo accounts (only on an empty users table) and return the ML engineer to act as."""
    from jobs.seed import seed_demo_accounts
    from jobs.users import actor_for, get_user

    with session_scope(session_factory, write=True) as session:
        accounts = [account.username for account in seed_demo_accounts(session)]
    with session_scope(session_factory) as session:
        user = get_user(session, DEMO_ACTOR)
        actor = actor_for(session, user.id) if user is not None else None
    if actor is None:
        raise DemoError(
            f"the demo trains its models as the seeded user {DEMO_ACTOR!r}, which does not exist or is "
            "inactive: seed an empty database (python -m jobs seed) or create that ML engineer"
        )
    return accounts, actor


def _train_if_needed(
    store: ParquetStore,
    session_factory: Any,
    model: DemoModel,
    actor: Actor,
    tracking_uri: str,
    registry_uri: str | None,
    training: Mapping[str, Any],
) -> tuple[str, ...] | None:
    """Make sure version :data:`DEMO_VERSION` exists with its reference profile.

    Returns:
        ``None`` when the version was trained now, else the aliases it already holds.
    """
    from jobs.training import train_model

    name = registry.registered_model_name(model.project, model.model)
    existing = registry.list_versions(name, tracking_uri=tracking_uri, registry_uri=registry_uri)
    if not existing:
        # One OpenMP thread: the demo's small boosting fits gain nothing from a second one, whose
        # spin-waiting doubled their CPU time (and their wall time on a busy machine); the fitted
        # model is the same. threadpoolctl comes with scikit-learn.
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="openmp"):
            result = train_model(
                actor,
                project=model.project,
                model=model.model,
                store=store,
                tracking_uri=tracking_uri,
                registry_uri=registry_uri,
                session_factory=session_factory,
                config=training,
            )
        if result.version != DEMO_VERSION:  # pragma: no cover - a fresh registered model starts at 1
            raise DemoError(f"{name} was registered as version {result.version}, not {DEMO_VERSION}")
        return None
    serving = next((v for v in existing if v.version == DEMO_VERSION), None)
    if serving is None:
        raise DemoError(
            f"{name} exists in MLflow without version {DEMO_VERSION}, which serves the demo traffic; "
            "use an empty MLflow store for the demo"
        )
    partition = {"project": model.project, "model": model.model, "version": DEMO_VERSION}
    if not store.exists(REFERENCE_PROFILES, partition):
        _rewrite_reference(store, model, partition)
    return serving.aliases


def _rewrite_reference(store: ParquetStore, model: DemoModel, partition: Mapping[str, str]) -> None:
    """Rebuild a version's reference profile from its (deterministic) training set."""
    from jobs.training import PROFILE_FILE_NAME, read_training_table, reference_profile

    table = read_training_table(store, model.project, model.model)
    columns = [*model.feature_columns, *segment_columns(table.column_names), "label"]
    profile_table = reference_profile(store, table, columns, task=model.task).to_arrow()
    store.write_partition(
        REFERENCE_PROFILES,
        dict(partition),
        profile_table,
        file_name=PROFILE_FILE_NAME,
        replace_partition=True,
    )


# --------------------------------------------------------------------------- command line


def _demo_command(args: argparse.Namespace, settings: Any) -> int:
    from jobs.cli import EXIT_FAILURE, EXIT_OK, UsageError

    if args.days < 1:
        raise UsageError(f"--days must be at least 1, got {args.days}")
    if not args.volume > 0 or args.training_rows < 100:
        raise UsageError("--volume must be positive and --training-rows at least 100")

    def show(stage: str, fraction: float) -> None:
        print(f"[{fraction:4.0%}] {stage}", flush=True)

    workspace = build_demo_workspace(
        settings,
        days=args.days,
        seed=args.seed,
        volume=args.volume,
        training_rows=args.training_rows,
        if_empty=args.if_empty,
        after_monitor=default_after_monitor(),
        progress=show,
    )
    if workspace.skipped:
        print(f"{workspace.data_uri} already holds inference logs: demo not rebuilt")
        return EXIT_OK
    scenario = workspace.scenario
    assert scenario is not None and workspace.monitor is not None
    print(
        f"demo workspace in {workspace.data_uri}: {len(scenario.models)} models, {scenario.days} days from "
        f"{scenario.start_date}, {sum(scenario.inference_rows.values())} requests"
    )
    if workspace.accounts_created:
        print("demo accounts (password: <username>-demo-pass): " + ", ".join(workspace.accounts_created))
    print(workspace.monitor.to_text())
    print("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in workspace.timings.items()))
    return EXIT_OK if workspace.monitor.ok else EXIT_FAILURE


def register_demo(subparsers: Any) -> None:
    """``demo``: build the demo workspace from nothing (``--if-empty``: only when there is no traffic)."""
    parser = subparsers.add_parser(
        "demo", help="seed, generate, train, register and monitor the demo workspace"
    )
    parser.add_argument(
        "--if-empty", action="store_true", help="do nothing when the store already holds inference logs"
    )
    parser.add_argument("--days", type=int, default=90, help="days of demo traffic (ending yesterday)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--volume", type=float, default=1.0, help="multiplier of the daily request counts")
    parser.add_argument("--training-rows", type=int, default=20_000, help="rows of each training set")
    parser.set_defaults(func=_demo_command)

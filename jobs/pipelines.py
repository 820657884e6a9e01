"""Pipeline nodes: per-stage configuration with validation, locks, last-run status, and their CLI.

Every project has one pipeline (``default``) of the eight canonical stages of
:data:`jobs.db.models.PIPELINE_STAGES`. Each stage's configuration is a JSON object
whose fields are declared in :data:`STAGE_FIELDS` (name, type, bounds, choices,
whether required); :func:`validate_config` checks a typed object and
:func:`parse_form` turns the text a form or the command line sends into one.

Changes and who may make them:

* :func:`update_node_config` needs ``EDIT_PIPELINE`` on the project and is refused
  while the node is locked (by anyone, the administrator included: unlock first).
* :func:`lock_node` / :func:`unlock_node` need ``LOCK_PIPELINE``.
* :func:`record_run` stores the status of a run; scheduled jobs call it as ``system``.

Every change re-reads the acting user's roles from the database (a role revoked a
moment ago no longer counts), is serialised per project (``jobs.db.session.serialize``)
so a lock and an edit never interleave, and appends an audit entry
(``pipeline.node.update``, ``pipeline.node.lock``, ``pipeline.node.unlock``,
``pipeline.node.run``) with the state before and after.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs import audit
from jobs.contracts import key_segment_problem
from jobs.db.models import ENVIRONMENT_NAMES, PIPELINE_STAGES, Pipeline, PipelineNode, Project, User, utcnow
from jobs.db.session import serialize
from jobs.permissions import Actor, Permission, require
from jobs.users import Conflict, InvalidInput, active_actor, actor_for

DEFAULT_PIPELINE = "default"
SYSTEM_ACTOR = "system"
NEVER_RUN = "never_run"
NODE_STATUSES = (NEVER_RUN, "running", "succeeded", "failed", "skipped")
"""What :attr:`PipelineNode.last_status` may hold."""
STAGE_TITLES: Mapping[str, str] = {
    "ingestion": "Ingestion",
    "preparation": "Preparation",
    "features": "Features",
    "training_registry": "Training & registry",
    "deployment": "Deployment",
    "inference": "Inference",
    "monitoring": "Monitoring",
    "feedback": "Feedback",
}
MAX_TEXT_LENGTH = 1024
MAX_LIST_ITEMS = 500
MAX_REASON_LENGTH = 500
ESTIMATOR_CHOICES = ("hist_gradient_boosting", "linear")  # jobs.training.ESTIMATORS
DRIFT_METHOD_CHOICES = (
    "default",
    "ks",
    "chi2",
    "wasserstein_normed",
    "ks_statistic",
    "psi",
    "jensenshannon",
    "hellinger",
    "total_variation",
)
"""``default`` is ``analytics.policy.DEFAULT_POLICY``; the others apply one method to every column."""
_P_VALUE_METHODS = frozenset({"ks", "chi2"})
_COLUMN_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,127}")
_ALIAS_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,254}")
_RESERVED_ALIAS_RE = re.compile(r"(latest|v\d+)", re.IGNORECASE)
_URI_SCHEMES = ("s3", "https", "file")


class InvalidConfig(InvalidInput):
    """A stage configuration failed validation.

    Attributes:
        problems: Field name (or ``"*"`` for the whole object) -> what is wrong.
    """

    def __init__(self, stage: str, problems: Mapping[str, str]) -> None:
        self.stage = stage
        self.problems = dict(problems)
        listed = "; ".join(f"{name}: {message}" for name, message in self.problems.items())
        super().__init__(f"invalid {stage} configuration: {listed}")


class NodeLocked(Conflict):
    """The node is locked: its configuration cannot change until someone unlocks it."""


class StaleConfig(Conflict):
    """The node changed since the editor loaded it; reload and apply the change again."""


# --------------------------------------------------------------------------- field validators


def _check_text(value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be text"
    if not value.strip():
        return "must not be empty"
    if len(value) > MAX_TEXT_LENGTH:
        return f"must be at most {MAX_TEXT_LENGTH} characters"
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        return "must not contain control characters"
    return None


def _check_uri(value: Any) -> str | None:
    problem = _check_text(value)
    if problem:
        return problem
    if value != value.strip():
        return "must not start or end with spaces"
    if "://" not in value:
        if ".." in value.replace("\\", "/").split("/"):
            return "a local path must not contain '..'"
        return None
    parts = urlsplit(value)
    if parts.scheme not in _URI_SCHEMES:
        return (
            f"scheme {parts.scheme!r} is not supported (use s3://bucket/prefix, https://... or a local path)"
        )
    if parts.scheme in ("s3", "https") and not parts.netloc:
        return f"a {parts.scheme}:// URI needs a {'bucket' if parts.scheme == 's3' else 'host'}"
    if parts.password is not None:
        return "must not embed a password: configure credentials outside the pipeline"
    return None


def cron_problem(expression: Any) -> str | None:
    """What is wrong with a five-field cron expression (UTC), ``None`` when it is valid."""
    problem = _check_text(expression)
    if problem:
        return problem
    if len(expression.split()) != 5:
        return "must have five fields: minute hour day-of-month month day-of-week (e.g. '15 * * * *')"
    from apscheduler.triggers.cron import CronTrigger  # the scheduler's own parser, so both agree

    try:
        CronTrigger.from_crontab(expression, timezone=UTC)
    except ValueError as error:
        return f"is not a valid cron expression: {error}"
    return None


def _check_cron(value: Any) -> str | None:
    return cron_problem(value)


def _check_key(value: Any) -> str | None:
    problem = _check_text(value)
    return problem or key_segment_problem(value)


def _check_column(value: Any) -> str | None:
    if not isinstance(value, str) or not _COLUMN_NAME_RE.fullmatch(value):
        return "must be a column name (a letter or '_', then letters, digits, '_', '.' or '-'; at most 128)"
    return None


def _check_alias(value: Any) -> str | None:
    if not isinstance(value, str) or not _ALIAS_RE.fullmatch(value) or _RESERVED_ALIAS_RE.fullmatch(value):
        return "must be a registry alias: a letter then letters, digits, '_' or '-' (not 'latest' nor 'v<n>')"
    return None


# --------------------------------------------------------------------------- field specifications


@dataclass(frozen=True)
class FieldSpec:
    """One field of a stage configuration.

    Attributes:
        name: Key in the configuration object.
        kind: ``text``, ``uri``, ``cron``, ``key`` (a key segment), ``column``, ``alias``,
            ``int``, ``float``, ``choice`` or ``columns`` (a list of column names).
        label: Label shown in forms.
        help: One sentence saying what the field does and what it accepts.
        required: The stage cannot run without it.
        choices: Allowed values of a ``choice`` field.
        minimum: Smallest allowed number (inclusive unless ``exclusive``).
        maximum: Largest allowed number (inclusive unless ``exclusive``).
        exclusive: The bounds of a ``float`` field are exclusive.
    """

    name: str
    kind: str
    label: str
    help: str
    required: bool = False
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    exclusive: bool = False

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` for this field, ``None`` when it is acceptable."""
        if self.kind in ("int", "float"):
            return self._number_problem(value)
        if self.kind == "choice":
            return None if value in self.choices else f"must be one of {', '.join(self.choices)}"
        if self.kind == "columns":
            return self._columns_problem(value)
        return _SCALAR_CHECKS[self.kind](value)

    def _number_problem(self, value: Any) -> str | None:
        if isinstance(value, bool):
            return "must be a number"
        if self.kind == "int" and not isinstance(value, int):
            return "must be a whole number"
        if not isinstance(value, int | float) or not math.isfinite(value):
            return "must be a finite number"
        low, high = self.minimum, self.maximum
        if self.exclusive:
            if (low is not None and value <= low) or (high is not None and value >= high):
                return f"must be strictly between {_number_text(low)} and {_number_text(high)}"
            return None
        if low is not None and value < low:
            return f"must be at least {_number_text(low)}"
        if high is not None and value > high:
            return f"must be at most {_number_text(high)}"
        return None

    def _columns_problem(self, value: Any) -> str | None:
        if not isinstance(value, list):
            return "must be a list of column names"
        if len(value) > MAX_LIST_ITEMS:
            return f"must list at most {MAX_LIST_ITEMS} columns"
        for item in value:
            problem = _check_column(item)
            if problem:
                return f"{item!r} {problem}"
        if len(set(value)) != len(value):
            return "lists a column twice"
        return None


def _number_text(value: float | None) -> str:
    if value is None:
        return "-inf"
    return str(int(value)) if float(value).is_integer() else str(value)


_SCALAR_CHECKS: Mapping[str, Callable[[Any], str | None]] = {
    "text": _check_text,
    "uri": _check_uri,
    "cron": _check_cron,
    "key": _check_key,
    "column": _check_column,
    "alias": _check_alias,
}
FIELD_KINDS = (*_SCALAR_CHECKS, "int", "float", "choice", "columns")


def _f(name: str, kind: str, label: str, help_text: str, **options: Any) -> FieldSpec:
    return FieldSpec(name=name, kind=kind, label=label, help=help_text, **options)


STAGE_FIELDS: Mapping[str, tuple[FieldSpec, ...]] = {
    "ingestion": (
        _f(
            "source_uri",
            "uri",
            "Source URI",
            "Where raw data is read: s3://bucket/prefix, https://... or a local folder.",
            required=True,
        ),
        _f(
            "schedule",
            "cron",
            "Schedule (cron, UTC)",
            "When ingestion runs, e.g. '0 * * * *'.",
            required=True,
        ),
        _f("format", "choice", "Format", "File format of the source.", choices=("parquet", "csv", "json")),
        _f(
            "max_lag_hours",
            "int",
            "Maximum lag (hours)",
            "Alert when the newest source data is older.",
            minimum=1,
            maximum=720,
        ),
    ),
    "preparation": (
        _f(
            "null_policy",
            "choice",
            "Null policy",
            "What happens to rows with missing values.",
            required=True,
            choices=("drop_rows", "impute", "keep"),
        ),
        _f("dedupe_keys", "columns", "De-duplication keys", "Columns identifying a row (comma-separated)."),
        _f(
            "min_rows",
            "int",
            "Minimum rows",
            "Fewer rows than this fails the stage.",
            minimum=0,
            maximum=10**12,
        ),
    ),
    "features": (
        _f(
            "feature_set",
            "key",
            "Feature set",
            "Name of the feature set (letters, digits, '_', '-').",
            required=True,
        ),
        _f("numeric_features", "columns", "Numeric features", "Numeric input columns (comma-separated)."),
        _f(
            "categorical_features",
            "columns",
            "Categorical features",
            "Categorical input columns (comma-separated).",
        ),
    ),
    "training_registry": (
        _f("model", "key", "Model", "Registered as <project>.<model> in MLflow.", required=True),
        _f("estimator", "choice", "Estimator", "Model family.", required=True, choices=ESTIMATOR_CHOICES),
        _f("schedule", "cron", "Retraining schedule (cron, UTC)", "Leave empty to train on demand."),
        _f(
            "test_size",
            "float",
            "Hold-out share",
            "Share of rows kept for evaluation (between 0 and 1).",
            minimum=0,
            maximum=1,
            exclusive=True,
        ),
        _f(
            "min_rows",
            "int",
            "Minimum rows",
            "Fewer training rows than this refuses to train.",
            minimum=1,
            maximum=10**12,
        ),
    ),
    "deployment": (
        _f(
            "target_environment",
            "choice",
            "Target environment",
            "Environment this stage deploys to.",
            required=True,
            choices=ENVIRONMENT_NAMES,
        ),
        _f(
            "strategy",
            "choice",
            "Strategy",
            "How the new version replaces the old one.",
            required=True,
            choices=("direct", "canary", "blue_green"),
        ),
        _f(
            "canary_percent",
            "int",
            "Canary traffic (%)",
            "Share of traffic of a canary (canary only).",
            minimum=1,
            maximum=100,
        ),
        _f("alias", "alias", "Registry alias", "Alias the deployed version receives, e.g. 'champion'."),
    ),
    "inference": (
        _f(
            "mode",
            "choice",
            "Mode",
            "Batch scoring on a schedule, or an online endpoint.",
            required=True,
            choices=("batch", "online"),
        ),
        _f("schedule", "cron", "Batch schedule (cron, UTC)", "When batch scoring runs (batch mode only)."),
        _f(
            "max_latency_ms",
            "int",
            "Latency budget (ms)",
            "p95 latency above this is a breach.",
            minimum=1,
            maximum=60_000,
        ),
    ),
    "monitoring": (
        _f(
            "window",
            "choice",
            "Window",
            "Size of the monitoring windows.",
            required=True,
            choices=("hour", "day", "week"),
        ),
        _f(
            "drift_policy",
            "choice",
            "Drift policy",
            "'default' adapts the method to the sample size; the others apply one method to every column.",
            required=True,
            choices=DRIFT_METHOD_CHOICES,
        ),
        _f(
            "drift_threshold",
            "float",
            "Drift threshold",
            "p-value (ks, chi2) or effect size limit (other methods); not used by the default policy.",
            minimum=0,
            maximum=100,
            exclusive=True,
        ),
        _f(
            "label_horizon_days",
            "int",
            "Label horizon (days)",
            "How long labels may take to arrive.",
            required=True,
            minimum=0,
            maximum=365,
        ),
        _f("schedule", "cron", "Schedule (cron, UTC)", "When the monitor runs."),
    ),
    "feedback": (
        _f("label_source_uri", "uri", "Label source URI", "Where ground-truth labels arrive.", required=True),
        _f("join_key", "column", "Join key", "Column matching labels to predictions.", required=True),
        _f(
            "delay_days",
            "int",
            "Expected delay (days)",
            "Typical days between prediction and label.",
            minimum=0,
            maximum=365,
        ),
    ),
}


def stage_fields(stage: str) -> tuple[FieldSpec, ...]:
    """The fields of ``stage``.

    Raises:
        InvalidInput: for a stage that is not one of :data:`PIPELINE_STAGES`.
    """
    if stage not in STAGE_FIELDS:
        raise InvalidInput(f"unknown pipeline stage {stage!r}: use one of {', '.join(PIPELINE_STAGES)}")
    return STAGE_FIELDS[stage]


def _cross_field_problems(stage: str, config: Mapping[str, Any]) -> dict[str, str]:
    problems: dict[str, str] = {}
    if stage == "features":
        overlap = set(config.get("numeric_features") or ()) & set(config.get("categorical_features") or ())
        if overlap:
            problems["categorical_features"] = (
                f"{', '.join(sorted(overlap))} cannot be numeric and categorical"
            )
    elif stage == "deployment":
        canary = config.get("strategy") == "canary"
        if canary and "canary_percent" not in config:
            problems["canary_percent"] = "is required with the canary strategy"
        if not canary and "canary_percent" in config:
            problems["canary_percent"] = "only applies to the canary strategy"
    elif stage == "inference":
        batch = config.get("mode") == "batch"
        if batch and "schedule" not in config:
            problems["schedule"] = "is required in batch mode"
        if not batch and "schedule" in config:
            problems["schedule"] = "only applies to batch mode"
    elif stage == "monitoring":
        policy, threshold = config.get("drift_policy"), config.get("drift_threshold")
        if policy == "default" and threshold is not None:
            problems["drift_threshold"] = "the default policy has its own thresholds: leave it empty"
        elif policy in _P_VALUE_METHODS and isinstance(threshold, int | float) and threshold >= 1:
            problems["drift_threshold"] = f"{policy} compares a p-value: use a threshold between 0 and 1"
    return problems


def config_problems(stage: str, config: Any) -> dict[str, str]:
    """Every problem of ``config`` for ``stage`` (field -> message); empty when it is valid.

    Raises:
        InvalidInput: for an unknown stage.
    """
    fields = stage_fields(stage)
    if not isinstance(config, Mapping):
        return {"*": "the configuration must be a JSON object"}
    known = {spec.name: spec for spec in fields}
    problems: dict[str, str] = {}
    for key in config:
        if key not in known:
            problems[str(key)] = f"is not a setting of the {stage} stage (known: {', '.join(known)})"
    for spec in fields:
        if spec.name not in config or config[spec.name] is None:
            if spec.required:
                problems[spec.name] = "is required"
            continue
        problem = spec.problem(config[spec.name])
        if problem:
            problems[spec.name] = problem
    if not problems:
        problems.update(_cross_field_problems(stage, config))
    return problems


def validate_config(stage: str, config: Any) -> dict[str, Any]:
    """Check a typed configuration of ``stage`` and return it normalised.

    Normalised: ``None`` values dropped, keys in declaration order, floats as floats.

    Raises:
        InvalidConfig: listing every problem.
        InvalidInput: for an unknown stage.
    """
    problems = config_problems(stage, config)
    if problems:
        raise InvalidConfig(stage, problems)
    normalised: dict[str, Any] = {}
    for spec in stage_fields(stage):
        value = config.get(spec.name)
        if value is None:
            continue
        normalised[spec.name] = float(value) if spec.kind == "float" else value
    return normalised


def _parse_value(spec: FieldSpec, raw: Any) -> Any:
    """Text from a form or the command line -> the field's type (numbers parsed, lists split)."""
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = raw.strip()
        if raw == "":
            return None
    if spec.kind == "columns":
        if isinstance(raw, list):
            return raw
        return [item.strip() for item in str(raw).split(",") if item.strip()] or None
    if spec.kind == "int" and isinstance(raw, str):
        try:
            return int(raw, 10)
        except ValueError:
            raise ValueError("must be a whole number") from None
    if spec.kind == "float" and isinstance(raw, str):
        try:
            return float(raw)
        except ValueError:
            raise ValueError("must be a number") from None
    return raw


def parse_form(stage: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Build a validated configuration from form text (empty fields are left out).

    Args:
        stage: The stage.
        raw: Field name -> text (or a number, a list, ``None``) as a form sends it.

    Returns:
        The normalised configuration.

    Raises:
        InvalidConfig: listing every problem, unparseable numbers included.
    """
    fields = stage_fields(stage)
    known = {spec.name: spec for spec in fields}
    typed: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for name, value in raw.items():
        spec = known.get(name)
        if spec is None:
            problems[str(name)] = f"is not a setting of the {stage} stage"
            continue
        try:
            parsed = _parse_value(spec, value)
        except ValueError as error:
            problems[name] = str(error)
            continue
        if parsed is not None:
            typed[name] = parsed
    if problems:
        raise InvalidConfig(stage, problems)
    return validate_config(stage, typed)


def config_as_text(stage: str, config: Mapping[str, Any]) -> dict[str, str]:
    """The form text of each field of a stored configuration (empty for unset fields)."""
    texts: dict[str, str] = {}
    for spec in stage_fields(stage):
        value = config.get(spec.name) if isinstance(config, Mapping) else None
        if value is None:
            texts[spec.name] = ""
        elif isinstance(value, list):
            texts[spec.name] = ", ".join(str(item) for item in value)
        else:
            texts[spec.name] = str(value)
    return texts


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class NodeView:
    """One stage of a pipeline as pages and the CLI show it (detached from the session).

    Attributes:
        stage: Canonical stage name.
        title: Human title of the stage.
        config: Stored configuration.
        problems: What the stored configuration lacks or gets wrong (empty: ready to run).
        locked: Whether edits are refused.
        locked_by: Username of who locked it.
        last_status: Status of the last run (:data:`NODE_STATUSES`).
        last_run_at: When the last run finished or started.
        updated_at: Last change of the node (the edit form's concurrency token).
    """

    stage: str
    title: str
    config: dict[str, Any]
    problems: dict[str, str] = field(default_factory=dict)
    locked: bool = False
    locked_by: str | None = None
    last_status: str = NEVER_RUN
    last_run_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def configured(self) -> bool:
        """Whether the stored configuration is complete and valid."""
        return not self.problems


def _project(session: Session, slug: str) -> Project:
    project = session.scalars(select(Project).where(Project.slug == slug)).first()
    if project is None:
        raise Conflict(f"no project with slug {slug!r}")
    return project


def _nodes(session: Session, project: Project) -> dict[str, PipelineNode]:
    rows = session.scalars(
        select(PipelineNode)
        .join(Pipeline, Pipeline.id == PipelineNode.pipeline_id)
        .where(Pipeline.project_id == project.id, Pipeline.name == DEFAULT_PIPELINE)
        # Another transaction may have changed the node since this session last read it.
        .execution_options(populate_existing=True)
    )
    return {node.stage: node for node in rows}


def _node(session: Session, slug: str, stage: str) -> PipelineNode:
    stage_fields(stage)
    node = _nodes(session, _project(session, slug)).get(stage)
    if node is None:
        raise Conflict(f"project {slug!r} has no {stage} stage in its {DEFAULT_PIPELINE} pipeline")
    return node


def _usernames(session: Session, user_ids: set[int]) -> dict[int, str]:
    if not user_ids:
        return {}
    return dict(session.execute(select(User.id, User.username).where(User.id.in_(user_ids))).all())


def _view(node: PipelineNode, names: Mapping[int, str]) -> NodeView:
    config = dict(node.config) if isinstance(node.config, Mapping) else {}
    return NodeView(
        stage=node.stage,
        title=STAGE_TITLES.get(node.stage, node.stage),
        config=config,
        problems=config_problems(node.stage, config) if node.stage in STAGE_FIELDS else {},
        locked=node.locked,
        locked_by=names.get(node.locked_by_id) if node.locked_by_id is not None else None,
        last_status=node.last_status,
        last_run_at=node.last_run_at,
        updated_at=node.updated_at,
    )


def pipeline_view(session: Session, actor: Actor | None, project: str) -> list[NodeView]:
    """The stages of a project's pipeline in canonical order.

    Raises:
        Forbidden: if ``actor`` lacks ``VIEW_PIPELINE`` on the project.
        Conflict: if the project does not exist.
    """
    require(actor, Permission.VIEW_PIPELINE, project)
    nodes = _nodes(session, _project(session, project))
    names = _usernames(session, {n.locked_by_id for n in nodes.values() if n.locked_by_id is not None})
    return [_view(nodes[stage], names) for stage in PIPELINE_STAGES if stage in nodes]


def node_view(session: Session, actor: Actor | None, project: str, stage: str) -> NodeView:
    """One stage of a project's pipeline.

    Raises:
        Forbidden: if ``actor`` lacks ``VIEW_PIPELINE`` on the project.
        InvalidInput: for an unknown stage.
        Conflict: if the project or its stage does not exist.
    """
    require(actor, Permission.VIEW_PIPELINE, project)
    node = _node(session, project, stage)
    return _view(node, _usernames(session, {node.locked_by_id} if node.locked_by_id else set()))


# --------------------------------------------------------------------------- changing


def _target(project: str, stage: str) -> str:
    return f"pipeline:{project}/{stage}"


def _lock_state(node: PipelineNode, names: Mapping[int, str]) -> dict[str, Any]:
    return {
        "locked": node.locked,
        "locked_by": names.get(node.locked_by_id) if node.locked_by_id is not None else None,
    }


def update_node_config(
    session: Session,
    actor: Actor,
    project: str,
    stage: str,
    config: Mapping[str, Any],
    *,
    expected_updated_at: datetime | None = None,
) -> PipelineNode:
    """Replace the configuration of one stage.

    Args:
        session: Session of the transaction (the caller commits).
        actor: Who edits; needs ``EDIT_PIPELINE`` on the project.
        project: Project slug.
        stage: Stage name.
        config: The complete new configuration (typed; see :func:`parse_form` for text).
        expected_updated_at: ``updated_at`` of the node when the editor loaded it; a node
            changed since then is refused with :class:`StaleConfig` instead of overwritten.

    Returns:
        The changed node (unchanged when the configuration is the same).

    Raises:
        Forbidden: if ``actor`` lacks ``EDIT_PIPELINE`` on the project (now).
        NodeLocked: if the node is locked.
        StaleConfig: if the node changed since ``expected_updated_at``.
        InvalidConfig: if the configuration is not valid.
        Conflict: if the project or stage does not exist.
    """
    current = active_actor(session, actor, Permission.EDIT_PIPELINE, project)
    stage_fields(stage)
    serialize(session, f"pipeline:{project}")
    node = _node(session, project, stage)
    if node.locked:
        holder = _usernames(session, {node.locked_by_id} if node.locked_by_id else set())
        who = holder.get(node.locked_by_id, "someone") if node.locked_by_id else "someone"
        raise NodeLocked(f"the {stage} stage of {project} is locked by {who}: unlock it before editing")
    if expected_updated_at is not None and node.updated_at != expected_updated_at:
        raise StaleConfig(
            f"the {stage} stage of {project} changed since you opened it: reload and apply your change again"
        )
    after = validate_config(stage, config)
    before = dict(node.config or {})
    if after == before:
        return node
    node.config = after
    node.updated_at = utcnow()
    session.flush()
    audit.append(
        session,
        current.username,
        "pipeline.node.update",
        _target(project, stage),
        {"project": project, "stage": stage, "before": before, "after": after},
    )
    return node


def lock_node(session: Session, actor: Actor, project: str, stage: str, *, reason: str = "") -> PipelineNode:
    """Lock one stage: its configuration is refused changes until :func:`unlock_node`.

    Raises:
        Forbidden: if ``actor`` lacks ``LOCK_PIPELINE`` on the project (now).
        InvalidInput: for an over-long reason or an unknown stage.
        Conflict: if the node is already locked, or the project or stage does not exist.
    """
    return _set_lock(session, actor, project, stage, locked=True, reason=reason)


def unlock_node(
    session: Session, actor: Actor, project: str, stage: str, *, reason: str = ""
) -> PipelineNode:
    """Unlock one stage.

    Raises:
        Forbidden: if ``actor`` lacks ``LOCK_PIPELINE`` on the project (now).
        InvalidInput: for an over-long reason or an unknown stage.
        Conflict: if the node is not locked, or the project or stage does not exist.
    """
    return _set_lock(session, actor, project, stage, locked=False, reason=reason)


def _set_lock(
    session: Session, actor: Actor, project: str, stage: str, *, locked: bool, reason: str
) -> PipelineNode:
    current = active_actor(session, actor, Permission.LOCK_PIPELINE, project)
    stage_fields(stage)
    reason = reason.strip() if isinstance(reason, str) else ""
    if len(reason) > MAX_REASON_LENGTH:
        raise InvalidInput(f"the reason must be at most {MAX_REASON_LENGTH} characters")
    serialize(session, f"pipeline:{project}")
    node = _node(session, project, stage)
    names = _usernames(session, {node.locked_by_id, current.user_id} - {None})
    if node.locked == locked:
        if locked:
            raise Conflict(
                f"the {stage} stage of {project} is already locked by {names.get(node.locked_by_id)}"
            )
        raise Conflict(f"the {stage} stage of {project} is not locked")
    before = _lock_state(node, names)
    node.locked = locked
    node.locked_by_id = current.user_id if locked else None
    node.updated_at = utcnow()
    session.flush()
    details: dict[str, Any] = {
        "project": project,
        "stage": stage,
        "before": before,
        "after": _lock_state(node, names),
    }
    if reason:
        details["reason"] = reason
    audit.append(
        session,
        current.username,
        "pipeline.node.lock" if locked else "pipeline.node.unlock",
        _target(project, stage),
        details,
    )
    return node


def record_run(
    session: Session, project: str, stage: str, status: str, *, at: datetime | None = None
) -> PipelineNode:
    """Store the status of a run of one stage (called by the jobs that run stages, as ``system``).

    A lock does not stop this: locks freeze the configuration, not the runs.

    Raises:
        InvalidInput: for an unknown status or stage, or a naive ``at``.
        Conflict: if the project or stage does not exist.
    """
    if status not in NODE_STATUSES or status == NEVER_RUN:
        raise InvalidInput(f"run status must be one of {', '.join(NODE_STATUSES[1:])}")
    when = at or utcnow()
    if when.tzinfo is None:
        raise InvalidInput("the run time must be timezone-aware")
    serialize(session, f"pipeline:{project}")
    node = _node(session, project, stage)
    before = {"last_status": node.last_status, "last_run_at": node.last_run_at}
    node.last_status = status
    node.last_run_at = when
    session.flush()
    audit.append(
        session,
        SYSTEM_ACTOR,
        "pipeline.node.run",
        _target(project, stage),
        {
            "project": project,
            "stage": stage,
            "before": before,
            "after": {"last_status": status, "last_run_at": when},
        },
    )
    return node


# --------------------------------------------------------------------------- command line


def _cli_session(settings: Any) -> tuple[Any, Any]:
    from jobs.db import make_engine, make_session_factory

    engine = make_engine(settings.database_url)
    return engine, make_session_factory(engine)


def _cli_actor(session: Session, username: str) -> Actor:
    from jobs.users import get_user

    user = get_user(session, username)
    actor = actor_for(session, user.id) if user is not None else None
    if actor is None:
        raise InvalidInput(f"--actor {username!r} is not an active user")
    return actor


def _print_nodes(nodes: Sequence[NodeView]) -> None:
    for view in nodes:
        lock = f"locked by {view.locked_by}" if view.locked else "unlocked"
        ran = view.last_run_at.isoformat() if view.last_run_at else "never"
        state = "configured" if view.configured else f"incomplete ({', '.join(view.problems)})"
        print(f"{view.stage:<18} {view.last_status:<10} last run {ran:<32} {lock:<22} {state}")
        print(f"  config: {json.dumps(view.config, sort_keys=True)}")


def _cli_show(args: argparse.Namespace, settings: Any) -> int:
    from jobs.db import session_scope

    engine, factory = _cli_session(settings)
    try:
        with session_scope(factory) as session:
            nodes = pipeline_view(session, _cli_actor(session, args.actor), args.project)
        _print_nodes(nodes)
    finally:
        engine.dispose()
    return 0


def _parse_assignments(assignments: Sequence[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for item in assignments:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise InvalidInput(f"--set {item!r}: use --set NAME=VALUE")
        values[name.strip()] = value
    return values


def _cli_configure(args: argparse.Namespace, settings: Any) -> int:
    from jobs.db import session_scope

    if args.json is not None:
        try:
            config = json.loads(args.json)
        except json.JSONDecodeError as error:
            raise InvalidInput(f"--json is not valid JSON: {error}") from None
    else:
        config = parse_form(args.stage, _parse_assignments(args.set or []))
    engine, factory = _cli_session(settings)
    try:
        with session_scope(factory, write=True) as session:
            node = update_node_config(
                session, _cli_actor(session, args.actor), args.project, args.stage, config
            )
            print(f"{args.project}/{args.stage}: {json.dumps(node.config, sort_keys=True)}")
    finally:
        engine.dispose()
    return 0


def _cli_lock(args: argparse.Namespace, settings: Any) -> int:
    from jobs.db import session_scope

    engine, factory = _cli_session(settings)
    try:
        with session_scope(factory, write=True) as session:
            change = lock_node if args.pipeline_command == "lock" else unlock_node
            change(session, _cli_actor(session, args.actor), args.project, args.stage, reason=args.reason)
            print(f"{args.project}/{args.stage}: {args.pipeline_command}ed")
    finally:
        engine.dispose()
    return 0


def register_cli(subparsers: Any) -> None:
    """``pipeline show|configure|lock|unlock``: the pipeline commands of ``python -m jobs``."""
    parser = subparsers.add_parser("pipeline", help="show, configure, lock or unlock pipeline stages")
    actions = parser.add_subparsers(dest="pipeline_command", metavar="ACTION", required=True)
    show = actions.add_parser("show", help="list the stages of a project's pipeline")
    show.add_argument("project")
    show.add_argument("--actor", required=True, help="username whose view to show (needs view_pipeline)")
    show.set_defaults(func=_cli_show)
    configure = actions.add_parser("configure", help="replace a stage's configuration (refused when locked)")
    configure.add_argument("project")
    configure.add_argument("stage", choices=PIPELINE_STAGES)
    configure.add_argument("--actor", required=True, help="username of who edits (needs edit_pipeline)")
    source = configure.add_mutually_exclusive_group(required=True)
    source.add_argument("--set", action="append", metavar="NAME=VALUE", help="one field (repeatable)")
    source.add_argument("--json", help="the whole configuration as a JSON object")
    configure.set_defaults(func=_cli_configure)
    for name in ("lock", "unlock"):
        command = actions.add_parser(name, help=f"{name} a stage (needs lock_pipeline)")
        command.add_argument("project")
        command.add_argument("stage", choices=PIPELINE_STAGES)
        command.add_argument("--actor", required=True)
        command.add_argument("--reason", default="")
        command.set_defaults(func=_cli_lock)

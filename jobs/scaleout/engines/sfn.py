"""The ``sfn`` engine: AWS Step Functions runs the map (a Distributed Map over the unit manifests) and
the merge, as ECS tasks of the studio image.

The driver plans the run (manifests under ``<root>/profiling/runs/<run_id>/manifests/``) and starts
an execution of the profiling state machine with ``{"run_id": ...}``. The state machine
(``infra/terraform/stepfunctions/profiling.asl.json``, a Terraform template) lists the manifests,
runs ``python -m jobs profile-unit --manifest s3://<bucket>/<key> --out
s3://<bucket>/<prefix>/profiling/runs/<run_id>/units/<listing index>.parquet`` per manifest and then
``python -m jobs merge --run <run_id>``.

The definition is checked from code, not trusted: :func:`validate_definition` executes it with
:class:`StateMachineRun` (a small interpreter of the ASL subset the definition uses: Pass, Map with
an S3 ``listObjectsV2`` ItemReader, ECS ``runTask`` tasks, Retry, Catch, Fail, JSONPath and the
``States.Format``/``States.Array`` intrinsics) on a planned run, records the commands it would start
and compares them with the commands this code expects. The same interpreter runs a definition for real
on an S3-compatible store (SeaweedFS in the tests) with the commands as local processes.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from analytics.store import ParquetStore
from jobs.scaleout.units import RunLayout, RunPlan, ScaleoutError, read_json

LIST_OBJECTS = "arn:aws:states:::s3:listObjectsV2"
RUN_TASK = "arn:aws:states:::ecs:runTask.sync"
TERMINAL_STATUSES = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")
_TEMPLATE_RE = re.compile(r"(\$\$\{|%\{|\$\{([^}]*)\})")
_IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# --------------------------------------------------------------------------- commands this code expects


def unit_command(bucket: str, manifest_key: str, out: str) -> list[str]:
    """The container command of one map task."""
    return [
        "python",
        "-m",
        "jobs",
        "profile-unit",
        "--manifest",
        f"s3://{bucket}/{manifest_key}",
        "--out",
        out,
    ]


def merge_command(run_id: str) -> list[str]:
    """The container command of the merge task."""
    return ["python", "-m", "jobs", "merge", "--run", run_id]


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``.

    Raises:
        ScaleoutError: for anything else.
    """
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise ScaleoutError(f"{uri} is not an s3://bucket/key URI")
    bucket, key = uri[5:].split("/", 1)
    return bucket, key


# --------------------------------------------------------------------------- Terraform template


def render_template(text: str, variables: Mapping[str, Any]) -> str:
    """Render a Terraform ``templatefile`` that uses plain ``${name}`` interpolations only.

    ``$${`` is a literal ``${``; values are inserted as text (numbers as decimals, lists already
    ``jsonencode``-d by the caller).

    Raises:
        ScaleoutError: for an unknown variable, an expression other than a name, or a ``%{``
            directive.
    """

    def replace(match: re.Match[str]) -> str:
        opening, name = match.group(1), match.group(2)
        if opening == "$${":
            return "${"
        if opening == "%{":
            raise ScaleoutError("template directives (%{...}) are not supported")
        name = name.strip()
        if not _IDENTIFIER_RE.fullmatch(name):
            raise ScaleoutError(f"template expression ${{{name}}} is not a plain variable")
        if name not in variables:
            raise ScaleoutError(f"template variable {name!r} has no value")
        return str(variables[name])

    return _TEMPLATE_RE.sub(replace, text)


# --------------------------------------------------------------------------- JSONPath and intrinsics


def resolve_path(path: str, data: Any, context: Mapping[str, Any]) -> Any:
    """Resolve a JSONPath of the form ``$``, ``$.a.b`` or ``$$.a.b`` (context object).

    Raises:
        ScaleoutError: if a key is missing or the path has another form.
    """
    root, rest = (context, path[2:]) if path.startswith("$$") else (data, path[1:])
    if not path.startswith("$"):
        raise ScaleoutError(f"{path!r} is not a JSONPath")
    value = root
    for part in [p for p in rest.split(".") if p] if rest else []:
        if not isinstance(value, Mapping) or part not in value:
            raise ScaleoutError(f"JSONPath {path} does not resolve: no {part!r}")
        value = value[part]
    return value


class _Parser:
    """Recursive-descent parser of intrinsic calls: ``States.Name(arg, ...)``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, what: str) -> ScaleoutError:
        return ScaleoutError(f"intrinsic {self.text!r}: {what} at position {self.pos}")

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def parse(self) -> tuple:
        node = self.value()
        self.skip()
        if self.pos != len(self.text):
            raise self.error("unexpected text")
        return node

    def value(self) -> tuple:
        self.skip()
        if self.text.startswith("States.", self.pos):
            return self.call()
        char = self.text[self.pos : self.pos + 1]
        if char == "'":
            return self.string()
        if char == "$":
            start = self.pos
            while self.pos < len(self.text) and self.text[self.pos] not in ",) ":
                self.pos += 1
            return ("path", self.text[start : self.pos])
        match = re.compile(r"-?\d+(\.\d+)?").match(self.text, self.pos)
        if match:
            self.pos = match.end()
            return ("literal", json.loads(match.group(0)))
        raise self.error("expected a string, a path, a number or a call")

    def string(self) -> tuple:
        self.pos += 1
        chars = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\" and self.pos + 1 < len(self.text):
                # Escaped characters: \' \{ \} \\ (a \{ stays literal inside States.Format).
                following = self.text[self.pos + 1]
                chars.append(following if following in "'\\" else "\\" + following)
                self.pos += 2
                continue
            if char == "'":
                self.pos += 1
                return ("literal", "".join(chars))
            chars.append(char)
            self.pos += 1
        raise self.error("unterminated string")

    def call(self) -> tuple:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] != "(":
            self.pos += 1
        name = self.text[start : self.pos].strip()
        self.pos += 1
        args = []
        self.skip()
        if self.text[self.pos : self.pos + 1] == ")":
            self.pos += 1
            return ("call", name, args)
        while True:
            args.append(self.value())
            self.skip()
            char = self.text[self.pos : self.pos + 1]
            self.pos += 1
            if char == ")":
                return ("call", name, args)
            if char != ",":
                raise self.error("expected ',' or ')'")


def _format_arg(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _evaluate_node(node: tuple, data: Any, context: Mapping[str, Any]) -> Any:
    kind = node[0]
    if kind == "literal":
        return node[1]
    if kind == "path":
        return resolve_path(node[1], data, context)
    name, args = node[1], [_evaluate_node(arg, data, context) for arg in node[2]]
    if name == "States.Array":
        return args
    if name == "States.Format":
        template, values = args[0], list(args[1:])
        pieces = re.split(r"(\\\{|\\\}|\{\})", template)
        out = []
        for piece in pieces:
            if piece == "{}":
                if not values:
                    raise ScaleoutError(f"States.Format {template!r}: more {{}} than arguments")
                out.append(_format_arg(values.pop(0)))
            elif piece in ("\\{", "\\}"):
                out.append(piece[1])
            else:
                out.append(piece)
        if values:
            raise ScaleoutError(f"States.Format {template!r}: more arguments than {{}}")
        return "".join(out)
    raise ScaleoutError(f"intrinsic {name} is not supported by this interpreter")


def evaluate(expression: str, data: Any, context: Mapping[str, Any]) -> Any:
    """Evaluate the value of a ``key.$`` field: a JSONPath or an intrinsic function call."""
    expression = expression.strip()
    if expression.startswith("$"):
        return resolve_path(expression, data, context)
    return _evaluate_node(_Parser(expression).parse(), data, context)


def evaluate_parameters(template: Any, data: Any, context: Mapping[str, Any]) -> Any:
    """Apply a Parameters/ItemSelector template: ``key.$`` fields are evaluated, others copied."""
    if isinstance(template, Mapping):
        result = {}
        for key, value in template.items():
            if key.endswith(".$"):
                result[key[:-2]] = evaluate(value, data, context)
            else:
                result[key] = evaluate_parameters(value, data, context)
        return result
    if isinstance(template, list):
        return [evaluate_parameters(item, data, context) for item in template]
    return template


# --------------------------------------------------------------------------- the interpreter


ListObjects = Callable[[str, str], Sequence[Mapping[str, Any]]]
"""``(bucket, prefix) -> [{"Key": ..., "Size": ...}, ...]`` in key order (what listObjectsV2 yields)."""

RunCommand = Callable[[list[str]], int]
"""Run a container command; returns its exit code."""


@dataclass
class StateMachineRun:
    """Execute an ASL definition locally (the subset the profiling state machine uses).

    Map iterations run one after another; Retry intervals are not waited for. A non-zero exit code of
    an ECS task is ``States.TaskFailed``.

    Attributes:
        definition: The parsed definition.
        list_objects: The S3 listing behind ``listObjectsV2`` ItemReaders.
        run_command: Runs a container command.
        commands: Every command started, in order.
        visited: Every state entered, in order.
    """

    definition: Mapping[str, Any]
    list_objects: ListObjects
    run_command: RunCommand
    commands: list[list[str]] = field(default_factory=list)
    visited: list[str] = field(default_factory=list)

    def execute(self, execution_input: Mapping[str, Any]) -> tuple[str, Any]:
        """Run the machine; returns ``(status, output)``: ``SUCCEEDED`` or ``FAILED:<Error>``."""
        return self._run(self.definition, dict(execution_input), {})

    def _run(self, machine: Mapping[str, Any], data: Any, context: Mapping[str, Any]) -> tuple[str, Any]:
        name = machine["StartAt"]
        while True:
            state = machine["States"][name]
            self.visited.append(name)
            kind = state["Type"]
            if kind == "Fail":
                return f"FAILED:{state.get('Error', '')}", data
            if kind == "Succeed":
                return "SUCCEEDED", data
            if kind == "Pass":
                data = self._output(
                    state, data, evaluate_parameters(state.get("Parameters", data), data, context)
                )
            elif kind in ("Map", "Task"):
                try:
                    result = self._map(state, data) if kind == "Map" else self._task(state, data, context)
                except _StateFailed as failure:
                    handler = next(
                        (c for c in state.get("Catch", []) if _matches(c["ErrorEquals"], failure.error)), None
                    )
                    if handler is None:
                        return f"FAILED:{failure.error}", data
                    data = _set_path(data, handler.get("ResultPath", "$"), {"Error": failure.error})
                    name = handler["Next"]
                    continue
                data = self._output(state, data, result)
            else:
                raise ScaleoutError(f"state {name}: type {kind} is not supported by this interpreter")
            if state.get("End"):
                return "SUCCEEDED", data
            name = state["Next"]

    @staticmethod
    def _output(state: Mapping[str, Any], data: Any, result: Any) -> Any:
        return _set_path(data, state.get("ResultPath", "$"), result)

    def _task(self, state: Mapping[str, Any], data: Any, context: Mapping[str, Any]) -> Any:
        if state.get("Resource") != RUN_TASK:
            raise ScaleoutError(f"task resource {state.get('Resource')} is not supported by this interpreter")
        parameters = evaluate_parameters(state["Parameters"], data, context)
        overrides = parameters.get("Overrides", {}).get("ContainerOverrides", [])
        if len(overrides) != 1 or "Command" not in overrides[0]:
            raise ScaleoutError("an ECS task must override exactly one container's Command")
        command = [str(part) for part in overrides[0]["Command"]]
        attempts: dict[int, int] = {}
        while True:
            self.commands.append(command)
            if self.run_command(command) == 0:
                return {"Command": command}
            rule = next(
                (
                    i
                    for i, r in enumerate(state.get("Retry", []))
                    if _matches(r["ErrorEquals"], "States.TaskFailed")
                ),
                None,
            )
            if rule is None or attempts.get(rule, 0) >= int(state["Retry"][rule].get("MaxAttempts", 3)):
                raise _StateFailed("States.TaskFailed")
            attempts[rule] = attempts.get(rule, 0) + 1

    def _map(self, state: Mapping[str, Any], data: Any) -> Any:
        reader = state.get("ItemReader", {})
        if reader.get("Resource") != LIST_OBJECTS:
            raise ScaleoutError("only Map states with an S3 listObjectsV2 ItemReader are supported")
        where = evaluate_parameters(reader["Parameters"], data, {})
        items = list(self.list_objects(where["Bucket"], where.get("Prefix", "")))
        failed = 0
        for index, item in enumerate(items):
            context = {"Map": {"Item": {"Value": dict(item), "Index": index}}}
            item_input = evaluate_parameters(state.get("ItemSelector", {}), data, context)
            status, _ = self._run(state["ItemProcessor"], item_input, {})
            failed += status != "SUCCEEDED"
        tolerated = float(state.get("ToleratedFailurePercentage", 0))
        if items and failed * 100.0 / len(items) > tolerated:
            raise _StateFailed("States.ExceedToleratedFailureThreshold")
        return {"items": len(items), "failed": failed}


class _StateFailed(Exception):
    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def _matches(errors: Sequence[str], error: str) -> bool:
    return error in errors or "States.ALL" in errors


def _set_path(data: Any, path: str | None, value: Any) -> Any:
    if path is None:
        return data
    if path == "$":
        return value
    if not path.startswith("$."):
        raise ScaleoutError(f"ResultPath {path!r} is not supported")
    result = dict(data) if isinstance(data, Mapping) else {}
    cursor = result
    parts = path[2:].split(".")
    for part in parts[:-1]:
        cursor[part] = dict(cursor.get(part, {})) if isinstance(cursor.get(part), Mapping) else {}
        cursor = cursor[part]
    cursor[parts[-1]] = value
    return result


# --------------------------------------------------------------------------- validation


def validate_definition(definition: Mapping[str, Any], plan: RunPlan) -> list[str]:
    """Check a (rendered) state machine against what this code expects, on a planned run.

    Executes the definition with :class:`StateMachineRun` on the run's manifest keys (as
    ``listObjectsV2`` would list them) with every task succeeding, and compares: the listed bucket
    and prefix with the run's ``manifests/`` folder, each map task's command with
    :func:`unit_command` for that manifest and the run's partial key of that index, and the final
    command with :func:`merge_command`.

    Args:
        definition: The parsed, rendered definition.
        plan: A planned run on an ``s3://`` root (the bucket and prefix the machine must use).

    Returns:
        Every mismatch, in words; empty when the definition does what the code expects.
    """
    layout = plan.layout
    bucket, manifests_prefix = split_s3(layout.manifests_dir + "/")
    keys = [split_s3(layout.manifest(unit.index))[1] for unit in plan.units]
    listed: list[tuple[str, str]] = []

    def list_objects(list_bucket: str, prefix: str) -> list[dict[str, Any]]:
        listed.append((list_bucket, prefix))
        return [
            {"Key": key, "Size": 1}
            for key in sorted(keys)
            if list_bucket == bucket and key.startswith(prefix)
        ]

    problems: list[str] = []
    machine = StateMachineRun(definition, list_objects, lambda command: 0)
    try:
        status, _ = machine.execute({"run_id": plan.run_id})
    except ScaleoutError as error:
        return [f"the definition cannot be executed: {error}"]
    if status != "SUCCEEDED":
        problems.append(f"with every task succeeding the execution ends {status}")
    if listed != [(bucket, manifests_prefix)]:
        problems.append(f"the map lists {listed}, expected [({bucket!r}, {manifests_prefix!r})]")
    expected = [unit_command(bucket, key, layout.partial(index)) for index, key in enumerate(sorted(keys))]
    expected.append(merge_command(plan.run_id))
    if machine.commands != expected:
        for position, (got, want) in enumerate(zip(machine.commands, expected, strict=False)):
            if got != want:
                problems.append(f"command {position}: the definition runs {got}, the code expects {want}")
        if len(machine.commands) != len(expected):
            problems.append(
                f"the definition runs {len(machine.commands)} command(s), expected {len(expected)}"
            )
    return problems


# --------------------------------------------------------------------------- the engine


@dataclass
class SfnEngine:
    """Start the profiling state machine on a planned run and (optionally) wait for it.

    Attributes:
        state_machine_arn: ARN of the profiling state machine (``--cluster`` on the command line).
        client: A boto3 ``stepfunctions`` client (default: one for the store's region).
        poll_seconds: Pause between status checks while waiting.
        check_definition: Validate the deployed definition against the run before starting it.
    """

    state_machine_arn: str
    client: Any = None
    poll_seconds: float = 15.0
    check_definition: bool = True
    name: str = field(default="sfn", init=False)

    def _client(self, store: ParquetStore) -> Any:
        if self.client is None:
            import boto3

            self.client = boto3.client("stepfunctions", region_name=store.config.s3_region)
        return self.client

    def start(self, store: ParquetStore, plan: RunPlan) -> str:
        """Start an execution named after the run; returns its ARN.

        Raises:
            ScaleoutError: if the store is not on S3 or the deployed definition does not match.
        """
        if not store.is_s3:
            raise ScaleoutError("the sfn engine needs the data root on S3 (MMS_DATA_URI=s3://bucket/prefix)")
        client = self._client(store)
        if self.check_definition:
            described = client.describe_state_machine(stateMachineArn=self.state_machine_arn)
            problems = validate_definition(json.loads(described["definition"]), plan)
            if problems:
                raise ScaleoutError(
                    f"state machine {self.state_machine_arn} does not match this code: " + "; ".join(problems)
                )
        response = client.start_execution(
            stateMachineArn=self.state_machine_arn,
            name=plan.run_id,
            input=json.dumps({"run_id": plan.run_id}),
        )
        return response["executionArn"]

    def wait(
        self, store: ParquetStore, execution_arn: str, plan: RunPlan
    ) -> tuple[str, dict[str, Any] | None]:
        """Wait for an execution to end; returns its status and the merge's ``result.json`` (if any)."""
        client = self._client(store)
        while True:
            status = client.describe_execution(executionArn=execution_arn)["status"]
            if status in TERMINAL_STATUSES:
                break
            time.sleep(self.poll_seconds)
        try:
            result = read_json(store, f"{RunLayout(plan.root, plan.run_id).run_dir}/result.json")
        except FileNotFoundError:
            result = None
        return status, result

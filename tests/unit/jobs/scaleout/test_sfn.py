"""The Step Functions engine: the infra state machine against the code, the ASL interpreter, starting runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from analytics.store import ParquetStore, StoreConfig
from jobs.scaleout import make_engine
from jobs.scaleout.engines.sfn import (
    StateMachineRun,
    evaluate,
    merge_command,
    render_template,
    unit_command,
    validate_definition,
)
from jobs.scaleout.units import RunLayout, RunPlan, ScaleoutError, UnitFile, WorkUnit

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[4]
TERRAFORM = ROOT / "infra" / "terraform"
TEMPLATE = TERRAFORM / "stepfunctions" / "profiling.asl.json"
BUCKET = "acme-data"


def data_prefix() -> str:
    """``local.data_prefix`` of the Terraform code, the key prefix of MMS_DATA_URI."""
    match = re.search(r'^\s*data_prefix\s*=\s*"([^"]+)"', (TERRAFORM / "locals.tf").read_text(), re.M)
    assert match, "locals.tf defines no data_prefix"
    return match.group(1)


def template_variables() -> list[str]:
    """The variables stepfunctions.tf passes to templatefile()."""
    text = (TERRAFORM / "stepfunctions.tf").read_text()
    block = re.search(r"templatefile\([^,]+profiling\.asl\.json\",\s*\{(.*?)\}\)", text, re.S)
    assert block, "stepfunctions.tf does not render profiling.asl.json with templatefile()"
    return re.findall(r"^\s*(\w+)\s*=", block.group(1), re.M)


def rendered(tolerated: int = 0, text: str | None = None) -> dict:
    """The template rendered the way Terraform does, with placeholder infrastructure values."""
    values = {
        "cluster_arn": "arn:aws:ecs:eu-west-1:123456789012:cluster/studio",
        "task_definition_arn": "arn:aws:ecs:eu-west-1:123456789012:task-definition/studio-job:7",
        "container_name": "job",
        "subnets": json.dumps(["subnet-a", "subnet-b"]),
        "security_groups": json.dumps(["sg-1"]),
        "data_bucket": BUCKET,
        "data_prefix": data_prefix(),
        "max_concurrency": 20,
        "tolerated_failure_percentage": tolerated,
        "task_timeout_seconds": 3600,
    }
    assert sorted(values) == sorted(template_variables())
    return json.loads(render_template(text if text is not None else TEMPLATE.read_text(), values))


def s3_plan(units: int = 3, run_id: str = "20260101T000000Z-abcd1234") -> RunPlan:
    """A planned run on the bucket the state machine is rendered for (no S3 needed to build it)."""
    root = f"s3://{BUCKET}/{data_prefix()}"
    work = tuple(
        WorkUnit(
            run_id=run_id,
            index=i,
            unit_id=f"{i:064x}",
            project="shop",
            model="scoring",
            environment="prod",
            date=f"2024-03-0{i % 9 + 1}",
            window="day",
            files=(UnitFile(f"{root}/inference_logs/x/{i}.parquet", 100),),
        )
        for i in range(units)
    )
    return RunPlan(run_id=run_id, root=root, window="day", unit_bytes=1, request={}, units=work, specs={})


def test_the_infra_state_machine_runs_the_commands_the_code_expects() -> None:
    assert validate_definition(rendered(), s3_plan(units=12)) == []


def test_the_tasks_data_root_is_the_state_machines_prefix() -> None:
    locals_text = (TERRAFORM / "locals.tf").read_text()
    assert '{ name = "MMS_DATA_URI", value = "s3://${aws_s3_bucket.data.bucket}/${local.data_prefix}" }' in (
        locals_text
    )
    stepfunctions = (TERRAFORM / "stepfunctions.tf").read_text()
    assert re.search(r"data_bucket\s*=\s*aws_s3_bucket\.data\.bucket", stepfunctions)
    assert re.search(r"data_prefix\s*=\s*local\.data_prefix", stepfunctions)


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        ("/units/{}.parquet", "/unit/{}.parquet", "command 0"),
        ("/manifests/", "/manifest/", "the map lists"),
        ("'merge', '--run'", "'merge', '--run-id'", "command 3"),
        ("$$.Map.Item.Value.Key", "$$.Map.Item.Value.ETag", "cannot be executed"),
        ('"Next": "MergeProfiles"', '"End": true', "3 command(s), expected 4"),
    ],
)
def test_a_drifted_definition_is_reported_precisely(old: str, new: str, complaint: str) -> None:
    text = TEMPLATE.read_text()
    assert old in text
    problems = validate_definition(rendered(text=text.replace(old, new, 1)), s3_plan())
    assert problems and any(complaint in p for p in problems), problems


def test_failed_tasks_are_retried_once_then_fail_the_run() -> None:
    plan = s3_plan()
    layout = RunLayout(plan.root, plan.run_id)
    keys = [layout.manifest(u.index).split("/", 3)[3] for u in plan.units]
    listing = [{"Key": k, "Size": 10} for k in keys]
    failures = {"1.parquet": 1}

    def flaky(command: list[str]) -> int:
        name = command[-1].rsplit("/", 1)[-1]
        if failures.get(name, 0) > 0:
            failures[name] -= 1
            return 1
        return 0

    machine = StateMachineRun(rendered(), lambda bucket, prefix: listing, flaky)
    status, _ = machine.execute({"run_id": plan.run_id})
    assert status == "SUCCEEDED"
    outs = [c[-1].rsplit("/", 1)[-1] for c in machine.commands[:-1]]
    assert outs == ["0.parquet", "1.parquet", "1.parquet", "2.parquet"]
    assert machine.commands[-1] == merge_command(plan.run_id)

    broken = StateMachineRun(
        rendered(), lambda bucket, prefix: listing, lambda c: 1 if c[-1].endswith("/2.parquet") else 0
    )
    status, output = broken.execute({"run_id": plan.run_id})
    assert status == "FAILED:ProfilingFailed"
    assert output["error"]["Error"] == "States.ExceedToleratedFailureThreshold"
    assert merge_command(plan.run_id) not in broken.commands
    lenient = StateMachineRun(
        rendered(tolerated=50),
        lambda bucket, prefix: listing,
        lambda c: 1 if c[-1].endswith("/2.parquet") else 0,
    )
    assert lenient.execute({"run_id": plan.run_id})[0] == "SUCCEEDED"


def test_intrinsics_and_paths() -> None:
    data = {"run_id": "r1", "n": 3}
    context = {"Map": {"Item": {"Index": 7, "Value": {"Key": "a/b.json"}}}}
    assert evaluate("States.Format('x/{}/y/{}', $.run_id, $$.Map.Item.Index)", data, context) == "x/r1/y/7"
    assert evaluate("States.Array('a', States.Format('{}-{}', $.n, 'z'), 2)", data, context) == [
        "a",
        "3-z",
        2,
    ]
    assert evaluate("States.Format('it\\'s \\{literal\\} {}', $$.Map.Item.Value.Key)", data, context) == (
        "it's {literal} a/b.json"
    )
    for bad in ("States.Format('{} {}', $.run_id)", "States.Hash('x', 'SHA-256')", "$.missing"):
        with pytest.raises(ScaleoutError):
            evaluate(bad, data, context)


def test_template_rendering_is_strict() -> None:
    assert render_template("a ${x} $${y}", {"x": 1}) == "a 1 ${y}"
    with pytest.raises(ScaleoutError, match="has no value"):
        render_template("${nope}", {})
    with pytest.raises(ScaleoutError, match="not a plain variable"):
        render_template("${var.x}", {"x": 1})
    with pytest.raises(ScaleoutError, match="directives"):
        render_template("%{ if true }x%{ endif }", {})


class FakeStepFunctions:
    """Records the calls the engine makes; AWS Step Functions cannot run here."""

    def __init__(self, definition: dict) -> None:
        self.definition = definition
        self.calls: list[tuple[str, dict]] = []

    def describe_state_machine(self, **kwargs):
        self.calls.append(("describe_state_machine", kwargs))
        return {"definition": json.dumps(self.definition)}

    def start_execution(self, **kwargs):
        self.calls.append(("start_execution", kwargs))
        return {"executionArn": f"arn:aws:states:eu-west-1:1:execution:sm:{kwargs['name']}"}


def test_the_engine_checks_the_deployed_definition_before_starting() -> None:
    plan = s3_plan()
    store = ParquetStore(StoreConfig(data_uri=plan.root))
    arn = "arn:aws:states:eu-west-1:123456789012:stateMachine:studio-prod-profiling"
    client = FakeStepFunctions(rendered())
    engine = make_engine("sfn", cluster=arn, client=client)
    execution = engine.start(store, plan)
    assert execution.endswith(plan.run_id)
    assert client.calls[-1] == (
        "start_execution",
        {"stateMachineArn": arn, "name": plan.run_id, "input": json.dumps({"run_id": plan.run_id})},
    )
    drifted = FakeStepFunctions(rendered(text=TEMPLATE.read_text().replace("/units/{}", "/out/{}")))
    with pytest.raises(ScaleoutError, match="does not match this code"):
        make_engine("sfn", cluster=arn, client=drifted).start(store, plan)
    assert [name for name, _ in drifted.calls] == ["describe_state_machine"]


def test_engine_options_are_checked() -> None:
    with pytest.raises(ScaleoutError, match="state machine ARN"):
        make_engine("sfn")
    with pytest.raises(ScaleoutError, match="MaxConcurrency"):
        make_engine("sfn", cluster="arn:x", max_parallel=4)
    with pytest.raises(ScaleoutError, match="no --cluster"):
        make_engine("local", cluster="spark://x:7077")
    with pytest.raises(ScaleoutError, match="unknown engine"):
        make_engine("dask")
    local_store = ParquetStore(StoreConfig(data_uri="/tmp/not-s3"))
    with pytest.raises(ScaleoutError, match="needs the data root on S3"):
        make_engine("sfn", cluster="arn:x", client=FakeStepFunctions({})).start(local_store, s3_plan())
    assert unit_command("b", "k.json", "s3://b/o.parquet")[3:] == [
        "profile-unit",
        "--manifest",
        "s3://b/k.json",
        "--out",
        "s3://b/o.parquet",
    ]

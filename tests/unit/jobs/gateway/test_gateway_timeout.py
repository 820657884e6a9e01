"""The scoring deadline's setting, and the micro-batcher moving slow versions off the event loop."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.settings import SettingsError
from jobs.gateway.app import MicroBatcher
from jobs.gateway.config import GatewayConfig
from tests.unit.jobs.gateway.support import features, loaded_model
from tests.unit.jobs.gateway.test_models import _run_in_fresh_loop

pytestmark = pytest.mark.unit

SLOW_SECONDS = 3.0


class SlowClassifier:
    """A fitted classifier that takes :data:`SLOW_SECONDS` per call (a model stuck on I/O, say)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.classes_ = inner.classes_
        self.finished = threading.Event()  # set once a call has slept its SLOW_SECONDS

    def predict_proba(self, frame: Any) -> np.ndarray:
        """The inner probabilities, late."""
        time.sleep(SLOW_SECONDS)
        self.finished.set()
        return self.inner.predict_proba(frame)


def test_the_deadline_defaults_to_5_s_and_reads_from_the_environment() -> None:
    assert GatewayConfig(environment="prod").score_timeout_s == 5.0
    environ = {"MMS_GATEWAY_ENVIRONMENT": "prod", "MMS_GATEWAY_SCORE_TIMEOUT_S": " 0.25 "}
    config = GatewayConfig.from_environ(environ)
    assert config.score_timeout_s == 0.25
    assert GatewayConfig.from_environ(config.to_environ()) == config


@pytest.mark.parametrize("raw", ["0", "-1", "soon", "nan", "inf", "1e400"])
def test_a_deadline_that_is_not_a_positive_finite_number_is_refused(raw: str) -> None:
    with pytest.raises(SettingsError, match="MMS_GATEWAY_SCORE_TIMEOUT_S"):
        GatewayConfig.from_environ({"MMS_GATEWAY_ENVIRONMENT": "prod", "MMS_GATEWAY_SCORE_TIMEOUT_S": raw})


def test_a_slow_version_is_scored_off_the_loop_and_its_deadline_fires_while_it_runs() -> None:
    fast = loaded_model("1")
    slow_estimator = SlowClassifier(fast.estimator)
    slow = dataclasses.replace(loaded_model("2"), estimator=slow_estimator)
    record = fast.parse_features(features(), "f")[0]

    async def scenario() -> tuple[bool, bool, bool, float, bool]:
        batcher = MicroBatcher()
        try:
            await batcher.score(fast, [record])  # not yet measured: scored in the pool, then judged
            fast_inline = batcher.scored_inline(fast)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await batcher.score(slow, [record])
            # Asked of the model itself, not of a clock (a loaded machine delays both sides alike).
            model_running_at_deadline = not slow_estimator.finished.is_set()
            # The loop kept running: the fast version answers while the slow one still sleeps.
            answered = await asyncio.wait_for(batcher.score(fast, [record]), 30)
            model_running_at_answer = not slow_estimator.finished.is_set()
            await asyncio.to_thread(slow_estimator.finished.wait, 60)  # the slow call ends in the background
            return (
                model_running_at_deadline,
                model_running_at_answer,
                fast_inline,
                answered[2][0],
                batcher.scored_inline(slow),
            )
        finally:
            batcher.close()

    at_deadline, at_answer, fast_inline, score, slow_inline = _run_in_fresh_loop(scenario())
    assert at_deadline, "the deadline waited for the model"
    assert at_answer, "the fast version waited for the slow one"
    assert fast_inline and 0.0 <= score <= 1.0
    assert not slow_inline  # judged slow: its next batches stay off the loop


def test_a_scoring_call_that_never_returns_does_not_hold_up_the_exit() -> None:
    script = (
        "import threading, time\n"
        "from jobs.gateway.app import DaemonThreadPool\n"
        "pool = DaemonThreadPool(2, 'mms-score')\n"
        "pool.submit(threading.Event().wait)\n"  # blocks forever, like a hung model
        "time.sleep(0.2)\n"
        "pool.shutdown(wait=False)\n"
        "print('exiting', flush=True)\n"
    )
    root = Path(__file__).resolve().parents[4]
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stdout.strip()) == (0, "exiting"), done.stderr

"""Model Monitoring Studio analytics: profiles, drift, data quality and performance over Parquet.

The public surface for jobs, callbacks and notebooks::

    import analytics

    con = analytics.connect_duckdb(analytics.StoreConfig(data_uri="var/data"))
    reference = analytics.read_source(con, "reference/*.parquet")
    current = analytics.read_source(con, "current/*.parquet")

    spec = analytics.build_spec(reference)              # bin edges and categories, once
    ref_profile = analytics.profile(reference, spec)    # mergeable, persisted with .to_arrow()
    report = analytics.drift(ref_profile, analytics.profile(current, spec))
    report.to_pandas()

    analytics.quality(ref_profile, analytics.profile(current, spec)).to_polars()
    analytics.classification_metrics(logs, labels, window="day").to_pandas()
    analytics.figures.distribution_overlay(ref_profile.column("income"), ...)

``profile``, ``drift`` and ``quality`` are both submodules and the functions notebooks call, so
those three are bound eagerly (a submodule imported later would otherwise shadow the function);
every other name resolves lazily, and the figure builders (plotly) load only when
``analytics.figures`` is touched. This package never imports dash, flask or the web app.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any


def _running_as_command_line() -> bool:
    """Whether this process is ``python [options] -m analytics ...`` (the drift command line)."""
    argv = sys.orig_argv
    return "-m" in argv[:-1] and argv[argv.index("-m") + 1] == "analytics"


if _running_as_command_line():
    # The drift command line calls no BLAS routine, but NumPy's bundled OpenBLAS starts a server
    # thread per extra core on import that spins for about 0.1 s before it sleeps: 50-70 ms of CPU
    # per report (perf: blas_thread_server). With one BLAS thread it starts none. Set here because
    # OpenBLAS reads it once, when analytics.drift below imports NumPy.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from analytics.drift import drift as drift  # noqa: E402
from analytics.profile import profile as profile  # noqa: E402
from analytics.quality import quality as quality  # noqa: E402

_EXPORTS: dict[str, str] = {
    # store
    "StoreConfig": "analytics.store",
    "ParquetStore": "analytics.store",
    "StoreError": "analytics.store",
    "CorruptParquet": "analytics.store",
    "connect_duckdb": "analytics.store",
    "read_source": "analytics.store",
    # profiles
    "ProfileSpec": "analytics.profile",
    "Profile": "analytics.profile",
    "ColumnProfile": "analytics.profile",
    "build_spec": "analytics.profile",
    "merge_profiles": "analytics.profile",
    "profiles_to_arrow": "analytics.profile",
    "profiles_from_arrow": "analytics.profile",
    # drift
    "drift_windows": "analytics.drift",
    "drift_relations": "analytics.drift",
    "DriftReport": "analytics.drift",
    "DriftTimeline": "analytics.drift",
    "ColumnDrift": "analytics.drift",
    "Policy": "analytics.policy",
    "Rule": "analytics.policy",
    "DEFAULT_POLICY": "analytics.policy",
    # data quality
    "schema_drift": "analytics.quality",
    "freshness": "analytics.quality",
    "QualityReport": "analytics.quality",
    # performance
    "classification_metrics": "analytics.performance",
    "regression_metrics": "analytics.performance",
    "latency_metrics": "analytics.performance",
    "PerformanceReport": "analytics.performance",
    "LatencyReport": "analytics.performance",
}

_SUBMODULES = {"figures", "metrics", "store", "policy", "performance"}

__all__ = sorted([*_EXPORTS, *_SUBMODULES, "drift", "profile", "quality"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later look-ups skip this hook
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"analytics.{name}")
    raise AttributeError(f"module 'analytics' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__

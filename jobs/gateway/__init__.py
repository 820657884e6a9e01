"""The inference gateway: HTTP scoring of registered models, routed by deployment, fully logged.

Modules:

* :mod:`jobs.gateway.app` — the Starlette app (``create_app``) and its uvicorn factory;
* :mod:`jobs.gateway.routing` — the ``RoutingTable`` contract and its MLflow/JSON sources;
* :mod:`jobs.gateway.models` — loaded versions, payload validation, the per-process cache;
* :mod:`jobs.gateway.logbuffer` — the bounded log buffer with spill-to-disk and replay;
* :mod:`jobs.gateway.request_dates` — the request-id -> day map shared by the workers;
* :mod:`jobs.gateway.metrics` — Prometheus counters summed over the workers;
* :mod:`jobs.gateway.config` — ``MMS_GATEWAY_*`` configuration;
* :mod:`jobs.gateway.cli` — ``python -m jobs serve``.

See ``docs/GATEWAY.md``. Nothing is imported here, so ``import jobs.gateway`` stays cheap.
"""

"""Component ids of the Dashboard page, used by ``pages/dashboard.py`` and ``callbacks/dashboard.py``."""

from __future__ import annotations


class ID:
    """Component ids of the Dashboard page (pages may not import callbacks, so both import these)."""

    GREETING = "dashboard-greeting"
    ROLES = "dashboard-roles"
    KPIS = "dashboard-kpis"
    LATENCY = "dashboard-latency"
    ACCURACY = "dashboard-accuracy"
    ALERTS = "dashboard-alerts"

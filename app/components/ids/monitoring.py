"""Component ids of the Monitoring page, used by ``pages/monitoring.py`` and ``callbacks/monitoring.py``.

Pages may not import callbacks (and callbacks do not import pages: a page module registers itself
with Dash when imported), so both import the ids from here.
"""

from __future__ import annotations


class ID:
    """Component ids of the Monitoring page."""

    PROJECT = "monitoring-project"
    MODEL = "monitoring-model"
    ENVIRONMENT = "monitoring-environment"
    DATES = "monitoring-dates"
    WINDOW = "monitoring-window"
    SEGMENT = "monitoring-segment"
    SEGMENT_HELP = "monitoring-segment-help"
    STATUS = "monitoring-status"
    EXPORT = "monitoring-export"
    EXPORT_DOWNLOAD = "monitoring-export-download"
    EXPORT_FEEDBACK = "monitoring-export-feedback"
    SUMMARY = "monitoring-summary"
    HEATMAP = "monitoring-drift-heatmap"
    FEATURE_TITLE = "monitoring-feature-title"
    FEATURE_TIMELINE = "monitoring-feature-timeline"
    FEATURE_DISTRIBUTION = "monitoring-feature-distribution"
    FEATURE_QUALITY = "monitoring-feature-quality"
    PERFORMANCE = "monitoring-performance"
    LATENCY = "monitoring-latency"
    ALERTS = "monitoring-alerts"
    ALERT_COMMENT = "monitoring-alert-comment"
    ALERT_FEEDBACK = "monitoring-alert-feedback"
    ALERTS_VERSION = "monitoring-alerts-version"
    HEATMAP_SHOWN = "monitoring-heatmap-shown"
    """Store of the key of the selection whose heatmap is drawn (the selection bar sends the first one)."""
    ALERT_ACK_TYPE = "monitoring-alert-ack"
    """``type`` of the acknowledge buttons' pattern-matching ids ``{"type": ..., "alert": <alert id>}``."""

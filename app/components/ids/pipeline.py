"""Component ids of the Pipeline page, used by ``pages/pipeline.py`` and ``callbacks/pipeline.py``."""

from __future__ import annotations


class ID:
    """Component ids of the Pipeline page (pages may not import callbacks, so both import these)."""

    PROJECT = "pipeline-project"
    REFRESH = "pipeline-refresh"
    LEGEND = "pipeline-legend"
    DAG_CONTAINER = "pipeline-dag-container"
    STAGE_TABLE = "pipeline-stage-table"
    STAGE = "pipeline-stage"
    NODE_INFO = "pipeline-node-info"
    NODE_FORM = "pipeline-node-form"
    NODE_VERSION = "pipeline-node-version"
    SAVE_BUTTON = "pipeline-node-save"
    LOCK_BUTTON = "pipeline-node-lock"
    UNLOCK_BUTTON = "pipeline-node-unlock"
    LOCK_REASON = "pipeline-node-lock-reason"
    NODE_MESSAGE = "pipeline-node-message"
    DAG = "pipeline-dag"
    FIELD_TYPE = "pipeline-field"

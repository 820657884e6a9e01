"""Component ids of the Models page, used by ``pages/models.py`` and ``callbacks/models.py``."""

from __future__ import annotations

# The backfill environment choice meaning every environment of the model (a Select shows "" as blank).
ALL_ENVIRONMENTS = "all"


class ID:
    """Component ids of the Models page (pages may not import callbacks, so both import these)."""

    PROJECT = "models-project"
    REGISTRY = "models-registry"
    TRAIN_CARD = "models-train-card"
    TRAIN_MODEL = "models-train-model"
    TRAIN_START = "models-train-start"
    TRAIN_CANCEL = "models-train-cancel"
    TRAIN_PROGRESS = "models-train-progress"
    TRAIN_RESULT = "models-train-result"
    BACKFILL_CARD = "models-backfill-card"
    BACKFILL_MODEL = "models-backfill-model"
    BACKFILL_ENVIRONMENT = "models-backfill-environment"
    BACKFILL_SINCE = "models-backfill-since"
    BACKFILL_UNTIL = "models-backfill-until"
    BACKFILL_START = "models-backfill-start"
    BACKFILL_CANCEL = "models-backfill-cancel"
    BACKFILL_PROGRESS = "models-backfill-progress"
    BACKFILL_RESULT = "models-backfill-result"

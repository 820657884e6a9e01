"""Component ids of the Approvals page, used by ``pages/approvals.py`` and ``callbacks/approvals.py``."""

from __future__ import annotations

# The filters' value meaning "do not filter" (a Select shows an empty value as blank).
ANY = "all"


class ID:
    """Component ids of the Approvals page (pages may not import callbacks, so both import these)."""

    PROJECT = "approvals-project"
    ENVIRONMENT = "approvals-environment"
    STATUS = "approvals-status"
    LIST = "approvals-list"
    MESSAGE = "approvals-message"
    DECIDED = "approvals-decided"
    REQUESTED = "approvals-requested"
    REQUEST_CARD = "approvals-request-card"
    REQUEST_PROJECT = "approvals-request-project"
    REQUEST_MODEL = "approvals-request-model"
    REQUEST_VERSION = "approvals-request-version"
    REQUEST_ENVIRONMENT = "approvals-request-environment"
    REQUEST_JUSTIFICATION = "approvals-request-justification"
    REQUEST_SUPERSEDE = "approvals-request-supersede"
    REQUEST_SUBMIT = "approvals-request-submit"
    REQUEST_MESSAGE = "approvals-request-message"
    # Types of the pattern-matching ids of each request card's decision form.
    APPROVE_TYPE = "approvals-approve"
    REJECT_TYPE = "approvals-reject"
    COMMENT_TYPE = "approvals-comment"
    BINDING_TYPE = "approvals-binding"

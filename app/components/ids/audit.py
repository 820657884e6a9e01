"""Component ids of the Audit log page, used by ``pages/audit.py`` and ``callbacks/audit.py``."""

from __future__ import annotations


class ID:
    """Component ids of the Audit log page (pages may not import callbacks, so both import these)."""

    ACTOR = "audit-filter-actor"
    ACTION = "audit-filter-action"
    DATE_FROM = "audit-filter-from"
    DATE_TO = "audit-filter-to"
    APPLY = "audit-filter-apply"
    PAGE = "audit-page"
    PREVIOUS = "audit-page-previous"
    NEXT = "audit-page-next"
    PAGE_INFO = "audit-page-info"
    ENTRIES = "audit-entries"
    FILTER_MESSAGE = "audit-filter-message"
    VERIFY_SECTION = "audit-verify-section"
    VERIFY_BUTTON = "audit-verify"
    VERIFY_RESULT = "audit-verify-result"

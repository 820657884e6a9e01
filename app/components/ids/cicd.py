"""Component ids of the CI/CD page, used by ``pages/cicd.py`` and ``callbacks/cicd.py``."""

from __future__ import annotations

# The filters' "all" choice (an empty value would select dbc.Select's hidden placeholder; no slug has "*").
ALL = "*"


class ID:
    """Component ids of the CI/CD page (pages may not import callbacks, so both import these)."""

    PROJECT = "cicd-project"
    ENVIRONMENT = "cicd-environment"
    TICK = "cicd-tick"
    REFRESH = "cicd-refresh"
    DEPLOYMENTS = "cicd-deployments"
    DEPLOYMENTS_PAGE = "cicd-deployments-page"
    DEPLOYMENTS_PREVIOUS = "cicd-deployments-previous"
    DEPLOYMENTS_NEXT = "cicd-deployments-next"
    DEPLOYMENTS_INFO = "cicd-deployments-info"
    DEPLOYMENT = "cicd-deployment"
    DETAIL = "cicd-deployment-detail"
    REASON = "cicd-action-reason"
    ACTION_MESSAGE = "cicd-action-message"
    PROMOTE_SECTION = "cicd-promote-section"
    PROMOTE_CONFIRM = "cicd-promote-confirm"
    PAUSE_SECTION = "cicd-pause-section"
    PAUSE_CONFIRM = "cicd-pause-confirm"
    RESUME_SECTION = "cicd-resume-section"
    RESUME_CONFIRM = "cicd-resume-confirm"
    ABORT_SECTION = "cicd-abort-section"
    ABORT_CONFIRM = "cicd-abort-confirm"
    ROLLBACK_SECTION = "cicd-rollback-section"
    ROLLBACK_CONFIRM = "cicd-rollback-confirm"
    RUNS = "cicd-runs"
    RUNS_CURSORS = "cicd-runs-cursors"
    RUNS_NEXT_CURSOR = "cicd-runs-next-cursor"
    RUNS_PREVIOUS = "cicd-runs-previous"
    RUNS_NEXT = "cicd-runs-next"
    RUNS_INFO = "cicd-runs-info"

"""Component ids of the Integrations page, used by its layout and by ``callbacks/integrations.py``.

Each integration's card has four ids named after the integration (``data_store`` gives
``integration-check-data-store``); the GitHub webhook card's ids are ``WebhookID``.
"""

from __future__ import annotations


def _card_id(part: str, integration: str) -> str:
    return f"integration-{part}-{integration.replace('_', '-')}"


def config_view(integration: str) -> str:
    """Id of the element showing what one integration points at."""
    return _card_id("config", integration)


def checking_section(integration: str) -> str:
    """Id of the wrapper of one integration's check button (shown to those who may check)."""
    return _card_id("checking", integration)


def check_button(integration: str) -> str:
    """Id of the "check connection" button of one integration."""
    return _card_id("check", integration)


def check_result(integration: str) -> str:
    """Id of the element showing one integration's check result."""
    return _card_id("result", integration)


class WebhookID:
    """Component ids of the GitHub webhook card (pages may not import callbacks, so both import these)."""

    URL = "integration-github-webhook-url"
    REPOSITORIES = "integration-github-repositories"
    REFRESH = "integration-github-refresh"
    MANAGE = "integration-github-manage"
    PROJECT = "integration-github-project"
    REPOSITORY = "integration-github-repository"
    SECRET = "integration-github-secret"  # noqa: S105 - a component id, not a password
    SAVE = "integration-github-save"
    REMOVE_REPOSITORY = "integration-github-remove-repository"
    REMOVE_CONFIRM = "integration-github-remove-confirm"
    MESSAGE = "integration-github-message"

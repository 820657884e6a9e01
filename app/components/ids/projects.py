"""Component ids of the Projects page, used by ``pages/projects.py`` and ``callbacks/projects.py``."""

from __future__ import annotations


class ID:
    """Component ids of the Projects page (pages may not import callbacks, so both import these)."""

    REFRESH = "projects-refresh"
    TABLE = "projects-table"
    TABLE_WRAPPER = "projects-table-wrapper"
    CREATE_CARD = "project-create-card"
    CREATE_SLUG = "project-create-slug"
    CREATE_NAME = "project-create-name"
    CREATE_DESCRIPTION = "project-create-description"
    CREATE_BUTTON = "project-create"
    CREATE_MESSAGE = "project-create-message"
    SELECT = "project-select"
    ENVIRONMENTS = "project-environments"
    MEMBERS = "project-members"
    EDIT_CARD = "project-edit-card"
    EDIT_NAME = "project-edit-name"
    EDIT_DESCRIPTION = "project-edit-description"
    SAVE_BUTTON = "project-save"
    ARCHIVE_CONFIRM = "project-archive-confirm"
    EDIT_MESSAGE = "project-edit-message"
    MEMBERS_CARD = "project-members-card"
    MEMBER_USER = "project-member-user"
    MEMBER_ROLE = "project-member-role"
    GRANT_BUTTON = "project-member-grant"
    REVOKE_BUTTON = "project-member-revoke"
    MEMBER_MESSAGE = "project-member-message"

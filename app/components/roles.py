"""The Grant / Revoke buttons of a role form, shared by the Projects and Admin pages.

Both pages have a form with a project, a user and a role, two buttons, a message
area and a refresh counter. :func:`role_change_callbacks` registers the two
callbacks of one such form, each guarded by ``MANAGE_MEMBERS``. What a click does
is the caller's ``change`` (``callbacks.projects.change_membership``), which goes
through ``jobs.users``: the job checks the permission on the project again and
writes the audit log.

The callbacks are attributed to the caller's module (``module``), so tools that
map a callback to its page by module (the page-id consistency test) see them as
that page's callbacks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State
from dash.exceptions import PreventUpdate

from app.rbac import requires
from jobs.permissions import Permission

RoleChange = Callable[[bool, str | None, str | None, str | None], dbc.Alert]
"""``change(grant, project, username, role)``: performs the change and says how it went."""
AfterChange = Callable[[dbc.Alert, int | None], Any]
"""``after(outcome, refresh)``: the refresh counter's new value (``dash.no_update`` to keep it)."""
RoleButton = Callable[[int | None, str | None, str | None, str | None, int | None], tuple[dbc.Alert, Any]]


@dataclass(frozen=True)
class RoleForm:
    """Component ids of one role form.

    Attributes:
        grant: The Grant button.
        revoke: The Revoke button.
        project: The project choice (a value is a project slug).
        user: The user choice (a value is a username).
        role: The role choice (a value is a ``Role`` value).
        message: Where the outcome is shown.
        refresh: The page's refresh counter (a ``dcc.Store``).
    """

    grant: str
    revoke: str
    project: str
    user: str
    role: str
    message: str
    refresh: str


def role_change_callbacks(
    form: RoleForm, change: RoleChange, after: AfterChange, *, module: str
) -> tuple[RoleButton, RoleButton]:
    """Register the Grant and Revoke callbacks of ``form``.

    Args:
        form: The form's component ids.
        change: Performs a grant (``True``) or a revoke (``False``).
        after: The refresh counter after an outcome.
        module: Module the callbacks belong to (pass ``__name__``).

    Returns:
        ``(grant_clicked, revoke_clicked)``, each called as
        ``(n_clicks, project, username, role, refresh) -> (message, refresh)``.
    """

    def clicked(grant: bool, n_clicks: int | None, slug: str | None, username: str | None, role: str | None):
        if not n_clicks:
            raise PreventUpdate
        return change(grant, slug, username, role)

    def grant_clicked(
        n_clicks: int | None, slug: str | None, username: str | None, role: str | None, refresh: int | None
    ) -> tuple[dbc.Alert, Any]:
        """Give the chosen user the chosen role on the chosen project."""
        outcome = clicked(True, n_clicks, slug, username, role)
        return outcome, after(outcome, refresh)

    def revoke_clicked(
        n_clicks: int | None, slug: str | None, username: str | None, role: str | None, refresh: int | None
    ) -> tuple[dbc.Alert, Any]:
        """Take the chosen role on the chosen project away from the chosen user."""
        outcome = clicked(False, n_clicks, slug, username, role)
        return outcome, after(outcome, refresh)

    states = (State(form.project, "value"), State(form.user, "value"), State(form.role, "value"))
    registered = []
    for button, func, first in ((form.grant, grant_clicked, True), (form.revoke, revoke_clicked, False)):
        func.__module__ = module
        func.__qualname__ = func.__name__
        # The first callback owns the message output; the second shares it (allow_duplicate).
        message = Output(form.message, "children", allow_duplicate=not first)
        registered.append(
            dash.callback(
                message,
                Output(form.refresh, "data", allow_duplicate=True),
                Input(button, "n_clicks"),
                *states,
                State(form.refresh, "data"),
                prevent_initial_call=True,
            )(requires(Permission.MANAGE_MEMBERS)(func))
        )
    return registered[0], registered[1]

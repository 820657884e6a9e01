"""Projects page callbacks: list, create, edit and archive projects; environments; members and roles.

Every change goes through the job functions (``jobs.projects``, ``jobs.users``),
which check the permission again with the acting user and write the audit log.
A refused change raises :class:`~dash.exceptions.PreventUpdate` (nothing changes,
nothing is shown); invalid input answers with the job's message.

The helpers at the top (:func:`notice`, :func:`run_change`, :func:`project_options`)
are shared by the other pages' callbacks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, html
from dash.exceptions import PreventUpdate
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth import current_actor, db_session
from app.components.ids.projects import ID
from app.components.roles import RoleForm, role_change_callbacks
from app.rbac import requires
from jobs.db.models import ENVIRONMENT_NAMES, Environment, Membership, Project, User
from jobs.permissions import ROLE_TITLES, Actor, Forbidden, Permission, Role, has_permission
from jobs.projects import archive_project, create_project, get_project, list_projects, update_project
from jobs.users import PROJECT_ROLES, Conflict, InvalidInput, grant_role, revoke_role

ROLE_OPTIONS = [{"label": ROLE_TITLES[role], "value": role.value} for role in Role if role in PROJECT_ROLES]


# ---------------------------------------------------------------------------- shared helpers


def notice(kind: str, text: str, component_id: str | None = None) -> dbc.Alert:
    """A dismissable message (``success``, ``danger``, ``warning``, ``info``); ``text`` renders as text."""
    extra = {"id": component_id} if component_id else {}
    return dbc.Alert(text, color=kind, dismissable=True, class_name="py-2 mb-2", **extra)


def run_change(change: Callable[[Session, Actor], str]) -> dbc.Alert:
    """Run ``change(session, actor)`` in a write transaction and say how it went.

    Returns:
        A success notice with the text ``change`` returned, or a danger notice with the
        job's message for invalid input or a conflict (nothing was written then).

    Raises:
        PreventUpdate: when a job refuses the actor (``Forbidden``): nothing changed.
    """
    actor = current_actor()
    if actor is None:
        raise PreventUpdate
    try:
        with db_session(write=True) as db:
            text = change(db, actor)
    except Forbidden:
        raise PreventUpdate from None
    except (InvalidInput, Conflict) as error:
        return notice("danger", str(error))
    return notice("success", text)


def project_options(permission: Permission) -> list[dict[str, str]]:
    """Select options (label: name, value: slug) of the projects where the user holds ``permission``."""
    actor = current_actor()
    with db_session() as db:
        projects = [(p.slug, p.name) for p in list_projects(db, actor)]
    return [
        {"label": f"{name} ({slug})", "value": slug}
        for slug, name in projects
        if has_permission(actor, permission, slug)
    ]


def kept_choice(options: list[dict[str, str]], selected: str | None) -> str | None:
    """``selected`` while ``options`` still list it, else the first option (``None`` without options)."""
    values = [option["value"] for option in options]
    return selected if selected in values else (values[0] if values else None)


def project_choice(permission: Permission, selected: str | None) -> tuple[list[dict[str, str]], str | None]:
    """A project selector's options (projects where the user holds ``permission``) and its value."""
    options = project_options(permission)
    return options, kept_choice(options, selected)


def bump(counter: int | None) -> int:
    """The next value of a page's refresh counter."""
    return (counter or 0) + 1


def refresh_after(outcome: dbc.Alert, counter: int | None) -> int | Any:
    """The refresh counter after a change: bumped when it succeeded, untouched otherwise.

    Untouched matters: a refresh re-renders forms from the database, which would wipe
    what the user typed before they could correct it.
    """
    return bump(counter) if outcome.color == "success" else dash.no_update


def ordered_environments(environments: list[Environment]) -> list[Environment]:
    """Environments in promotion order (dev, staging, prod), unknown names last."""
    rank = {name: index for index, name in enumerate(ENVIRONMENT_NAMES)}
    return sorted(environments, key=lambda env: (rank.get(env.name, len(rank)), env.name))


def role_names(roles: frozenset[Role] | set[Role] | list[str]) -> str:
    """Role titles, comma-separated, sorted."""
    titles = []
    for role in roles:
        try:
            titles.append(ROLE_TITLES[Role(role)])
        except ValueError:
            titles.append(str(role))
    return ", ".join(sorted(titles))


def _environment_names(environments: list[Environment]) -> str:
    return ", ".join(env.name for env in ordered_environments(environments))


# ---------------------------------------------------------------------------- listing


@dash.callback(Output(ID.TABLE_WRAPPER, "children"), Input(ID.REFRESH, "data"), prevent_initial_call=True)
@requires(Permission.VIEW_PROJECTS)
def reload_projects_table(_refresh: int | None) -> html.Div:
    """After a change, mount a fresh project table: its own callback fills it again."""
    return html.Div(id=ID.TABLE)


@dash.callback(Output(ID.TABLE, "children"), Input(ID.TABLE, "id"))
@requires(Permission.VIEW_PROJECTS)
def show_projects(_component_id: str) -> html.P | dbc.Table:
    """Table of visible projects: name, slug, description, environments and the user's roles."""
    actor = current_actor()
    with db_session() as db:
        rows = [
            html.Tr(
                [
                    html.Td(project.name),
                    html.Td(html.Code(project.slug)),
                    html.Td(project.description),
                    html.Td(_environment_names(project.environments)),
                    html.Td(
                        ", ".join(
                            sorted(role.value.replace("_", " ") for role in actor.roles_in(project.slug))
                        )
                    ),
                ]
            )
            for project in list_projects(db, actor)
        ]
    if not rows:
        return html.P("No project is visible to you yet.", className="text-body-secondary")
    header = html.Thead(
        html.Tr(
            [html.Th(title) for title in ("Project", "Slug", "Description", "Environments", "Your roles")]
        )
    )
    return dbc.Table([header, html.Tbody(rows)], bordered=False, hover=True, size="sm", id="projects-list")


@dash.callback(
    Output(ID.SELECT, "options"),
    Output(ID.SELECT, "value"),
    Input(ID.SELECT, "id"),
    Input(ID.REFRESH, "data"),
    State(ID.SELECT, "value"),
)
@requires(Permission.VIEW_PROJECTS)
def list_project_options(
    _component_id: str, _refresh: int | None, selected: str | None
) -> tuple[list[dict[str, str]], str | None]:
    """The project selector: visible projects, keeping the current choice while it is still listed."""
    return project_choice(Permission.VIEW_PROJECTS, selected)


def _members_table(db: Session, project: Project) -> html.P | dbc.Table:
    rows = db.execute(
        select(User.username, User.display_name, User.is_active, Membership.role)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.project_id == project.id)
        .order_by(User.username)
    ).all()
    if not rows:
        return html.P("Nobody holds a role on this project yet.", className="text-body-secondary")
    grouped: dict[str, tuple[str, bool, list[str]]] = {}
    for username, display_name, active, role in rows:
        grouped.setdefault(username, (display_name, active, []))[2].append(role)
    body = [
        html.Tr(
            [
                html.Td(username),
                html.Td(display_name),
                html.Td(role_names(roles)),
                html.Td("active" if active else "deactivated"),
            ]
        )
        for username, (display_name, active, roles) in grouped.items()
    ]
    header = html.Thead(html.Tr([html.Th(t) for t in ("User", "Name", "Roles", "Account")]))
    return dbc.Table([header, html.Tbody(body)], size="sm", hover=True, id="project-members-table")


def _environments_table(project: Project) -> dbc.Table:
    rows = [
        html.Tr([html.Td(env.name), html.Td(str(env.required_approvals))])
        for env in ordered_environments(project.environments)
    ]
    header = html.Thead(html.Tr([html.Th("Environment"), html.Th("Approvals required to promote")]))
    return dbc.Table([header, html.Tbody(rows)], size="sm", id="project-environments-table")


@dash.callback(
    Output(ID.ENVIRONMENTS, "children"),
    Output(ID.MEMBERS, "children"),
    Output(ID.EDIT_NAME, "value"),
    Output(ID.EDIT_DESCRIPTION, "value"),
    Input(ID.SELECT, "value"),
    Input(ID.REFRESH, "data"),
)
@requires(Permission.VIEW_PROJECTS)
def show_project(slug: str | None, _refresh: int | None = None) -> tuple[object, object, str, str]:
    """Environments (with the approvals each needs), members and the edit form of one project.

    Raises:
        PreventUpdate: without a selection, or for a project the user may not view.
    """
    if not slug:
        raise PreventUpdate
    actor = current_actor()
    try:
        with db_session() as db:
            project = get_project(db, actor, slug)
            if project.archived and not (actor and actor.is_admin):
                raise PreventUpdate
            environments = _environments_table(project)
            members = _members_table(db, project)
            name, description = project.name, project.description
    except (Forbidden, Conflict):
        raise PreventUpdate from None
    return environments, members, name, description


def member_candidates() -> list[dict[str, str]]:
    """Active users who can be given a role (label: display name and username)."""
    with db_session() as db:
        users = db.execute(
            select(User.username, User.display_name).where(User.is_active.is_(True)).order_by(User.username)
        ).all()
    return [{"label": f"{display} ({username})", "value": username} for username, display in users]


@dash.callback(
    Output(ID.CREATE_CARD, "hidden"),
    Output(ID.EDIT_CARD, "hidden"),
    Output(ID.MEMBERS_CARD, "hidden"),
    Output(ID.MEMBER_ROLE, "options"),
    Output(ID.MEMBER_USER, "options"),
    Input(ID.SELECT, "value"),
    Input(ID.REFRESH, "data"),
)
@requires(Permission.VIEW_PROJECTS)
def management_controls(
    slug: str | None, _refresh: int | None = None
) -> tuple[bool, bool, bool, list[dict[str, str]], list[dict[str, str]]]:
    """Reveal the forms the user may use (a courtesy: every change is checked again on the server).

    The list of accounts is only sent to those who may grant roles.
    """
    actor = current_actor()
    may_manage = has_permission(actor, Permission.MANAGE_PROJECTS)
    may_grant = has_permission(actor, Permission.MANAGE_MEMBERS, slug or None)
    return (
        not may_manage,
        not may_manage,
        not may_grant,
        ROLE_OPTIONS,
        member_candidates() if may_grant else [],
    )


# ---------------------------------------------------------------------------- changes


@dash.callback(
    Output(ID.CREATE_MESSAGE, "children"),
    Output(ID.REFRESH, "data", allow_duplicate=True),
    Input(ID.CREATE_BUTTON, "n_clicks"),
    State(ID.CREATE_SLUG, "value"),
    State(ID.CREATE_NAME, "value"),
    State(ID.CREATE_DESCRIPTION, "value"),
    State(ID.REFRESH, "data"),
    prevent_initial_call=True,
)
@requires(Permission.MANAGE_PROJECTS)
def create_project_clicked(
    n_clicks: int | None, slug: str | None, name: str | None, description: str | None, refresh: int | None
) -> tuple[dbc.Alert, int]:
    """Create a project with its dev/staging/prod environments and default pipeline."""
    if not n_clicks:
        raise PreventUpdate

    def change(db: Session, actor: Actor) -> str:
        project = create_project(db, actor, (slug or "").strip(), name or "", description or "")
        return f"Project {project.name} ({project.slug}) created with environments dev, staging and prod."

    outcome = run_change(change)
    return outcome, refresh_after(outcome, refresh)


@dash.callback(
    Output(ID.EDIT_MESSAGE, "children"),
    Output(ID.REFRESH, "data", allow_duplicate=True),
    Input(ID.SAVE_BUTTON, "n_clicks"),
    State(ID.SELECT, "value"),
    State(ID.EDIT_NAME, "value"),
    State(ID.EDIT_DESCRIPTION, "value"),
    State(ID.REFRESH, "data"),
    prevent_initial_call=True,
)
@requires(Permission.MANAGE_PROJECTS)
def save_project_clicked(
    n_clicks: int | None, slug: str | None, name: str | None, description: str | None, refresh: int | None
) -> tuple[dbc.Alert, int]:
    """Save the selected project's name and description."""
    if not n_clicks or not slug:
        raise PreventUpdate

    def change(db: Session, actor: Actor) -> str:
        project = update_project(db, actor, slug, name=name or "", description=description or "")
        return f"Project {project.slug} saved."

    outcome = run_change(change)
    return outcome, refresh_after(outcome, refresh)


@dash.callback(
    Output(ID.EDIT_MESSAGE, "children", allow_duplicate=True),
    Output(ID.REFRESH, "data", allow_duplicate=True),
    Input(ID.ARCHIVE_CONFIRM, "submit_n_clicks"),
    State(ID.SELECT, "value"),
    State(ID.REFRESH, "data"),
    prevent_initial_call=True,
)
@requires(Permission.MANAGE_PROJECTS)
def archive_project_confirmed(
    submit_n_clicks: int | None, slug: str | None, refresh: int | None
) -> tuple[dbc.Alert, int]:
    """Archive the selected project (after the browser's confirmation)."""
    if not submit_n_clicks or not slug:
        raise PreventUpdate

    def change(db: Session, actor: Actor) -> str:
        project = archive_project(db, actor, slug)
        return f"Project {project.slug} archived: hidden from lists, its data and history kept."

    outcome = run_change(change)
    return outcome, refresh_after(outcome, refresh)


def change_membership(grant: bool, slug: str | None, username: str | None, role: str | None) -> dbc.Alert:
    """Grant or revoke a role through ``jobs.users`` (shared by the Projects and Admin pages).

    Raises:
        PreventUpdate: when the actor may not manage the project's members.
    """
    if not slug or not username or not role:
        return notice("warning", "Choose a project, a user and a role first.")

    def change(db: Session, actor: Actor) -> str:
        if grant:
            grant_role(db, actor, username, slug, role)
            return f"{username} now holds {role_names([role])} on {slug}."
        removed = revoke_role(db, actor, username, slug, role)
        if not removed:
            return f"{username} did not hold {role_names([role])} on {slug}: nothing to revoke."
        return f"{username} no longer holds {role_names([role])} on {slug}."

    return run_change(change)


grant_clicked, revoke_clicked = role_change_callbacks(
    RoleForm(
        grant=ID.GRANT_BUTTON,
        revoke=ID.REVOKE_BUTTON,
        project=ID.SELECT,
        user=ID.MEMBER_USER,
        role=ID.MEMBER_ROLE,
        message=ID.MEMBER_MESSAGE,
        refresh=ID.REFRESH,
    ),
    change_membership,
    refresh_after,
    module=__name__,
)

"""Admin page callbacks: accounts, roles per project, alert rules, and the masked settings view."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import dash
import pytest
from dash.exceptions import PreventUpdate
from sqlalchemy import func, select

import callbacks.admin as cb
from app.settings import load_settings
from jobs.db.alerting import AlertRule
from jobs.db.models import AuditEntry, Membership, User
from tests.unit.app.studio import Studio, as_sent, build_studio, component_ids, shown, signed_in

pytestmark = pytest.mark.unit

XSS_NAME = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    with build_studio(tmp_path_factory.mktemp("admin-callbacks"), hidden_project=True) as built:
        yield built


def user(studio: Studio, username: str) -> User | None:
    with studio.db() as session:
        return session.scalars(select(User).where(User.username == username)).first()


def count(studio: Studio, model: type, *conditions: Any) -> int:
    with studio.db() as session:
        return session.scalar(select(func.count()).select_from(model).where(*conditions))


def rule_form(**values: Any) -> list[Any]:
    """The create-rule states in callback order (project, name, model, kind, ..., environment)."""
    defaults = {
        "project": "credit-risk",
        "name": "psi income",
        "model": "credit-default",
        "kind": "threshold",
        "metric": "psi",
        "column": "income",
        "operator": ">",
        "threshold": "0.2",
        "windows": "2",
        "max_age": "",
        "severity": "critical",
        "environment": "prod",
    }
    defaults.update(values)
    return list(defaults.values())


def test_sections_and_fixed_choices(studio: Studio) -> None:
    with signed_in(studio, "admin"):
        roles_hidden, rules_hidden, settings_hidden, roles, kinds, operators, severities, environments = (
            cb.page_sections("admin-roles-section")
        )
    assert (roles_hidden, rules_hidden, settings_hidden) == (False, False, False)
    assert [kind["value"] for kind in kinds] == ["threshold", "freshness"]
    assert "drifted" in [operator["value"] for operator in operators]
    assert [env["value"] for env in environments] == ["", "dev", "staging", "prod"]
    assert "critical" in [severity["value"] for severity in severities] and len(roles) == 5
    with signed_in(studio, "monitoring"), pytest.raises(PreventUpdate):
        cb.page_sections("admin-roles-section")


def test_admin_lists_accounts_with_their_state(studio: Studio) -> None:
    with signed_in(studio, "admin"):
        table, account_options, role_options = cb.show_users("admin-users")
    cells = shown(table)
    assert {"admin", "sponsor2", "Pat Production"} <= set(cells)
    assert account_options == role_options
    assert {"label": "Mo Monitoring (monitoring)", "value": "monitoring"} in account_options


@pytest.mark.parametrize("username", ["monitoring", "production", "sponsor1"])
def test_non_administrators_cannot_see_or_change_accounts(studio: Studio, username: str) -> None:
    accounts = count(studio, User)
    with signed_in(studio, username):
        for call in (
            lambda: cb.show_users("admin-users"),
            lambda: cb.create_user_clicked(1, f"new-{username}", "", "long-enough-pass", True, 0),
            lambda: cb.deactivate_clicked(1, "admin", 0),
            lambda: cb.show_settings("admin-settings"),
        ):
            with pytest.raises(PreventUpdate):
                call()
    assert count(studio, User) == accounts
    assert user(studio, "admin").is_active


def test_admin_creates_deactivates_and_reactivates_an_account(studio: Studio) -> None:
    with signed_in(studio, "admin"):
        created, refresh = cb.create_user_clicked(1, " ops-lead ", "Ops Lead", "ops-lead-password", True, 2)
        weak, weak_refresh = cb.create_user_clicked(1, "weakling", "", "short", False, 3)
        off, _ = cb.deactivate_clicked(1, "ops-lead", 3)
        self_off, _ = cb.deactivate_clicked(1, "admin", 4)
        missing, _ = cb.activate_clicked(1, None, 4)
    assert created.color == "success" and "as an administrator" in created.children and refresh == 3
    assert weak.color == "danger" and "at least 10 characters" in weak.children
    assert weak_refresh is dash.no_update and user(studio, "weakling") is None
    assert off.color == "success" and not user(studio, "ops-lead").is_active
    assert self_off.color == "danger" and "your own account" in self_off.children
    assert missing.color == "warning"
    with signed_in(studio, "admin"):
        on, _ = cb.activate_clicked(1, "ops-lead", 5)
    assert on.color == "success" and user(studio, "ops-lead").is_active and user(studio, "ops-lead").is_admin
    assert count(studio, AuditEntry, AuditEntry.action.in_(["user.deactivate", "user.activate"])) == 2


def test_roles_matrix_and_grants(studio: Studio) -> None:
    with signed_in(studio, "admin"):
        granted, _ = cb.grant_clicked(1, "hidden-project", "monitoring", "monitoring_team", 0)
        table, options = cb.show_roles("admin-roles")
        revoked, _ = cb.revoke_clicked(1, "hidden-project", "monitoring", "monitoring_team", 1)
    assert granted.color == "success" and revoked.color == "success"
    assert {"credit-risk", "demand-forecast", "hidden-project"} <= {option["value"] for option in options}
    cells = shown(table)
    assert "Monitoring Team" in cells and "Model Sponsor" in cells
    with signed_in(studio, "monitoring"):
        with pytest.raises(PreventUpdate):
            cb.show_roles("admin-roles")
        with pytest.raises(PreventUpdate):
            cb.grant_clicked(1, "credit-risk", "monitoring", "data_team", 0)
    assert count(studio, Membership, Membership.role == "data_team") == 2  # the demo data team's two


def test_alert_rules_are_created_changed_and_disabled_through_jobs_alerts(studio: Studio) -> None:
    with signed_in(studio, "admin"):
        created, refresh = cb.create_rule_clicked(1, *rule_form(), 0)
        bad, bad_refresh = cb.create_rule_clicked(1, *rule_form(name="bad", operator="drifted"), 1)
        freshness, _ = cb.create_rule_clicked(
            1, *rule_form(name="stale traffic", kind="freshness", max_age="6", threshold="9"), 1
        )
        table, options = cb.show_rules("credit-risk")
    assert created.color == "success", created.children
    assert refresh == 1
    assert bad.color == "danger" and "leave threshold empty" in bad.children and bad_refresh is dash.no_update
    assert freshness.color == "success", freshness.children
    cells = shown(table)
    assert "income > 0.2" in cells and "no traffic for 6 h" in cells and "critical" in cells
    rule_id = next(option["value"] for option in options if option["label"].startswith("psi income"))

    with signed_in(studio, "admin"):
        changed, _ = cb.update_threshold_clicked(1, rule_id, "0.35", 2)
        not_a_number, _ = cb.update_threshold_clicked(1, rule_id, "high", 2)
        disabled, _ = cb.disable_rule_clicked(1, rule_id, 3)
    assert changed.color == "success" and "threshold 0.35" in changed.children
    assert not_a_number.color == "danger"
    assert disabled.color == "success" and "disabled" in disabled.children
    with studio.db() as session:
        rule = session.get(AlertRule, int(rule_id))
        assert (rule.threshold, rule.enabled, rule.consecutive_windows, rule.environment) == (
            0.35,
            False,
            2,
            "prod",
        )
    assert count(studio, AuditEntry, AuditEntry.action == "alert_rule.update") == 2


def test_monitoring_team_manages_rules_only_on_its_projects(studio: Studio) -> None:
    rules = count(studio, AlertRule)
    with signed_in(studio, "monitoring"):
        created, _ = cb.create_rule_clicked(1, *rule_form(project="demand-forecast", name="null rate"), 0)
        options, value = cb.list_rule_projects("admin-rules-project", "hidden-project")
        with pytest.raises(PreventUpdate):
            cb.create_rule_clicked(1, *rule_form(project="hidden-project", name="forged"), 0)
        with pytest.raises(PreventUpdate):
            cb.show_rules("hidden-project")
    assert created.color == "success"
    assert "hidden-project" not in [option["value"] for option in options] and value == "credit-risk"
    assert count(studio, AlertRule) == rules + 1
    with signed_in(studio, "mlengineer"), pytest.raises(PreventUpdate):
        cb.create_rule_clicked(1, *rule_form(name="by engineer"), 0)
    assert count(studio, AlertRule, AlertRule.name == "by engineer") == 0


def test_settings_view_masks_secrets() -> None:
    settings = load_settings(
        {
            "MMS_SECRET_KEY": "s" * 40,
            "MMS_DATABASE_URL": "postgresql+psycopg://studio:db-password-123@db.internal:5432/mms",
            "MMS_DATA_URI": "s3://bucket/prefix",
            "MMS_S3_ACCESS_KEY_ID": "AKIAEXAMPLEKEY1234",
            "MMS_S3_SECRET_ACCESS_KEY": "very-secret-s3-key",
            "MMS_REDIS_URL": "redis://:redis-pass@cache:6379/0",
            "MMS_CELERY_BROKER_URL": "redis://:broker-pass@broker:6379/1",
        }
    )
    shown_rows = dict(
        cb.setting_rows(
            settings, {"MMS_GITHUB_REPOSITORY": "org/repo", "MMS_GITHUB_TOKEN": "ghp_secret_token"}
        )
    )
    everything = json.dumps(shown_rows)
    for secret in (
        "s" * 40,
        "db-password-123",
        "very-secret-s3-key",
        "redis-pass",
        "broker-pass",
        "ghp_secret_token",
        "AKIAEXAMPLE",
    ):
        assert secret not in everything
    assert shown_rows["secret_key"] == "set (hidden)"
    assert shown_rows["s3_session_token"] == "not set"
    assert shown_rows["database_url"] == "postgresql+psycopg://studio:••••••@db.internal:5432/mms"
    assert shown_rows["s3_access_key_id"].endswith("1234")
    assert shown_rows["github_repository"] == "org/repo" and shown_rows["github_token"] == "set (hidden)"
    assert shown_rows["duckdb_threads"] == "2"


def test_settings_callback_shows_the_studios_settings_without_its_secret(studio: Studio) -> None:
    with signed_in(studio, "admin"):
        table = cb.show_settings("admin-settings")
    cells = shown(table)
    assert "set (hidden)" in cells and studio.settings.secret_key not in json.dumps(cells)
    assert str(studio.settings.var_dir) in cells


def test_account_names_with_markup_are_text(studio: Studio) -> None:
    with signed_in(studio, "admin"):
        created, _ = cb.create_user_clicked(1, "markup-user", XSS_NAME, "markup-user-password", False, 0)
        table, options, _ = cb.show_users("admin-users")
    assert created.color == "success"
    assert XSS_NAME in shown(table)
    assert f"{XSS_NAME} (markup-user)" in [option["label"] for option in options]


PAGE_OF_MODULE = {
    "callbacks.projects": "/projects",
    "callbacks.pipeline": "/pipeline",
    "callbacks.models": "/models",
    "callbacks.integrations": "/integrations",
    "callbacks.admin": "/admin",
    "callbacks.audit": "/audit",
}


# Components a callback mounts into the page (checked by that callback's own tests).
MOUNTED_BY_CALLBACKS = {"pipeline-dag"}


def test_every_component_these_callbacks_use_is_in_its_page(studio: Studio) -> None:
    """Both take their ids from ``app.components.ids``: each id a callback uses must be on its page."""
    layouts = {}
    with signed_in(studio, "admin"):
        for page in dash.page_registry.values():
            if page["path"] in PAGE_OF_MODULE.values():
                layouts[page["path"]] = component_ids(as_sent(page["layout"]()))
    checked = 0
    for output, entry in studio.app.callback_map.items():
        path = PAGE_OF_MODULE.get(getattr(entry.get("callback"), "__module__", ""))
        if path is None:
            continue
        outputs = [part.split(".")[0] for part in output.strip(".").split("...")]
        used = {item["id"] for item in entry["inputs"] + entry["state"] if not item["id"].startswith("{")}
        used |= {name.lstrip(".") for name in outputs if not name.lstrip(".").startswith("{")}
        missing = used - layouts[path] - MOUNTED_BY_CALLBACKS
        assert not missing, f"{output} uses ids missing from {path}: {sorted(missing)}"
        checked += 1
    assert checked >= 40

"""Alert notifications: signed Slack-compatible webhooks and SMTP e-mail, with retries.

Channels are configured per project in the metadata database
(:class:`jobs.db.alerting.NotificationChannel`, managed with :func:`create_channel`,
:func:`update_channel` and :func:`disable_channel`, which re-check
``MANAGE_ALERT_RULES`` and write the audit log).

Delivery is at-least-once and never loses an alert: :func:`queue_deliveries`
records one ``pending`` :class:`~jobs.db.alerting.AlertDelivery` per channel in
the transaction that opens or resolves the alert; :func:`deliver` sends after
that commit and records the attempts and the last error on the delivery row;
:func:`deliver_pending` (run by the scheduler's ``alerts`` job) retries what failed
or was interrupted. A permanent refusal (see Retries), a disabled channel, or a
delivery out of attempts (``max_total_attempts``) or older than ``give_up_after``
ends ``abandoned``, with its last error kept. A receiver deduplicates with the
``X-MMS-Delivery`` header, which stays the same across retries of one delivery.

Webhooks
    The body is Slack-compatible JSON (``{"text": ..., "blocks": [...]}``) plus a
    structured ``alert`` object and a ``timestamp``. ``X-MMS-Signature-256`` is
    ``sha256=<hex HMAC-SHA256 of the raw body keyed with the channel secret>``;
    ``X-MMS-Timestamp`` repeats the body's ``timestamp`` (Unix seconds), so a
    receiver can refuse stale or replayed requests with a value the signature
    covers. Server-side request forgery is contained by:

    * a scheme allow-list: ``https``; ``http`` only when
      :attr:`WebhookPolicy.allow_http_loopback` is set (tests, development) and
      the host resolves to loopback addresses only;
    * resolving the host once and refusing private, loopback, link-local,
      shared (CGNAT), reserved, multicast and unspecified addresses (unless the
      host is in :attr:`WebhookPolicy.allowed_private_hosts`), then connecting to
      the checked address itself, so a second DNS answer cannot redirect the
      request (DNS rebinding);
    * never following redirects: a 3xx answer is a failed delivery naming the
      ``Location``. That is simpler and safer than re-checking every hop, and
      chat webhooks do not redirect;
    * connect/read timeouts, a capped response read, and no proxy settings from
      the environment.

E-mail
    Plain-text messages over SMTP (``smtplib``), with STARTTLS when configured
    (credentials are only ever sent after STARTTLS).

Retries
    Connection errors, timeouts, HTTP 408/425/429/5xx and SMTP 4xx replies are
    retried with exponential backoff (:class:`RetryPolicy`); anything else
    (a refused destination, a redirect, other 4xx, SMTP 5xx) fails at once.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import math
import os
import re
import secrets
import smtplib
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.settings import SettingsError, parse_bool, parse_int
from jobs import audit
from jobs.db.alerting import (
    ALERT_SEVERITIES,
    CHANNEL_KINDS,
    Alert,
    AlertDelivery,
    NotificationChannel,
)
from jobs.db.models import Project, utcnow
from jobs.db.session import session_scope
from jobs.permissions import Actor, Permission, require
from jobs.users import Conflict, InvalidInput

SIGNATURE_HEADER = "X-MMS-Signature-256"
TIMESTAMP_HEADER = "X-MMS-Timestamp"
DELIVERY_HEADER = "X-MMS-Delivery"
EVENT_HEADER = "X-MMS-Event"
USER_AGENT = "model-monitoring-studio-alerts/1"

EVENT_OPENED = "opened"
EVENT_RESOLVED = "resolved"
EVENTS = (EVENT_OPENED, EVENT_RESOLVED)

# Delivery row states. "sending" is a claim, reclaimed after SENDING_CLAIM_TIMEOUT (a crashed sender);
# "failed" is retried by later sweeps; "abandoned" is final (a permanent refusal, or out of attempts/time).
PENDING, SENDING, DELIVERED, FAILED, ABANDONED = "pending", "sending", "delivered", "failed", "abandoned"
SENDING_CLAIM_TIMEOUT = timedelta(minutes=15)

RETRYABLE_HTTP_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_RESPONSE_BYTES = 4096
MAX_RECIPIENTS = 50
MAX_URL_LENGTH = 2048
MIN_SECRET_LENGTH = 16
_CHANNEL_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# Deliberately strict: no display names, quotes, commas or whitespace, so a recipient can never
# smuggle another header or address into the message.
_EMAIL_RE = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?"
)
_CONTROL_CHARS_RE = re.compile(r"[\x00-\x1f\x7f]")


class UnsafeDestination(ValueError):
    """A webhook URL is refused by the destination policy (scheme, address or redirect)."""


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently one delivery is attempted.

    Attributes:
        max_attempts: Attempts per :func:`send_webhook`/:func:`send_email` call (>= 1).
        initial_delay: Seconds to wait before the second attempt.
        multiplier: Factor applied to the delay after every attempt.
        max_delay: Upper bound of one delay, in seconds.
    """

    max_attempts: int = 4
    initial_delay: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1")
        if self.initial_delay < 0 or self.max_delay < 0 or self.multiplier < 1:
            raise ValueError("RetryPolicy delays must be >= 0 and the multiplier >= 1")

    def delay_after(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return min(self.initial_delay * self.multiplier ** (attempt - 1), self.max_delay)


@dataclass(frozen=True)
class WebhookPolicy:
    """Where webhooks may go and how long they may take.

    Attributes:
        timeout: Connect and read timeout in seconds.
        allow_http_loopback: Accept ``http://`` and loopback addresses (tests, development only).
        allowed_private_hosts: Host names (lower case) allowed to resolve to private
            addresses, for an in-house receiver on a private network.
    """

    timeout: float = 10.0
    allow_http_loopback: bool = False
    allowed_private_hosts: frozenset[str] = frozenset()


@dataclass(frozen=True)
class SmtpConfig:
    """The SMTP relay alert e-mails go through.

    Attributes:
        host: Relay host name or address.
        port: Relay port (25, or 587 for submission with STARTTLS).
        sender: ``From`` address.
        starttls: Upgrade the connection with STARTTLS before sending (required for a login).
        username: Login name, ``None`` for an open relay.
        password: Login password.
        timeout: Socket timeout in seconds.
        ca_file: PEM bundle to verify the relay's certificate with (system store when ``None``).
    """

    host: str
    port: int = 25
    sender: str = "mms-alerts@localhost"
    starttls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 10.0
    ca_file: str | None = None


@dataclass(frozen=True)
class DeliveryOptions:
    """Everything delivery needs that is not stored on the channel.

    Attributes:
        retry: Retry policy of one send.
        webhook: Destination policy of webhooks.
        smtp: SMTP relay; e-mail channels fail (and stay queued) while it is ``None``.
        max_total_attempts: Attempts over all sweeps after which a delivery is
            ``abandoned`` (kept with its last error, never retried again).
        give_up_after: Age after which :func:`deliver_pending` abandons a delivery
            instead of retrying it (a stale alert notification helps nobody).
        studio_url: Base URL of the studio, linked from messages when set.
    """

    retry: RetryPolicy = RetryPolicy()
    webhook: WebhookPolicy = WebhookPolicy()
    smtp: SmtpConfig | None = None
    max_total_attempts: int = 20
    give_up_after: timedelta = timedelta(hours=24)
    studio_url: str | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> DeliveryOptions:
        """Read the options from ``MMS_*`` variables (see the module docs of each field).

        Variables: ``MMS_WEBHOOK_TIMEOUT_SECONDS``, ``MMS_WEBHOOK_ALLOW_HTTP_LOOPBACK``
        (refused when ``MMS_ENV=production``), ``MMS_WEBHOOK_ALLOWED_PRIVATE_HOSTS``
        (comma-separated), ``MMS_NOTIFY_MAX_ATTEMPTS``, ``MMS_NOTIFY_BACKOFF_SECONDS``,
        ``MMS_NOTIFY_MAX_TOTAL_ATTEMPTS``, ``MMS_SMTP_HOST``, ``MMS_SMTP_PORT``,
        ``MMS_SMTP_SENDER``, ``MMS_SMTP_STARTTLS``, ``MMS_SMTP_USERNAME``,
        ``MMS_SMTP_PASSWORD``, ``MMS_SMTP_TIMEOUT_SECONDS``, ``MMS_SMTP_CA_FILE``,
        ``MMS_STUDIO_URL``.

        Raises:
            SettingsError: naming the first malformed variable.
        """
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        production = (get("MMS_ENV") or "development") == "production"
        allow_loopback = parse_bool(
            "MMS_WEBHOOK_ALLOW_HTTP_LOOPBACK", get("MMS_WEBHOOK_ALLOW_HTTP_LOOPBACK") or "false"
        )
        if allow_loopback and production:
            raise SettingsError("MMS_WEBHOOK_ALLOW_HTTP_LOOPBACK=true is refused when MMS_ENV=production")
        private_hosts = frozenset(
            host.strip().lower()
            for host in (get("MMS_WEBHOOK_ALLOWED_PRIVATE_HOSTS") or "").split(",")
            if host.strip()
        )
        webhook = WebhookPolicy(
            timeout=_parse_seconds("MMS_WEBHOOK_TIMEOUT_SECONDS", get("MMS_WEBHOOK_TIMEOUT_SECONDS"), 10.0),
            allow_http_loopback=allow_loopback,
            allowed_private_hosts=private_hosts,
        )
        retry = RetryPolicy(
            max_attempts=parse_int(
                "MMS_NOTIFY_MAX_ATTEMPTS", get("MMS_NOTIFY_MAX_ATTEMPTS") or "4", minimum=1, maximum=20
            ),
            initial_delay=_parse_seconds(
                "MMS_NOTIFY_BACKOFF_SECONDS", get("MMS_NOTIFY_BACKOFF_SECONDS"), 1.0
            ),
        )
        smtp = None
        host = get("MMS_SMTP_HOST")
        if host:
            smtp = SmtpConfig(
                host=host,
                port=parse_int("MMS_SMTP_PORT", get("MMS_SMTP_PORT") or "25", minimum=1, maximum=65535),
                sender=get("MMS_SMTP_SENDER") or "mms-alerts@localhost",
                starttls=parse_bool("MMS_SMTP_STARTTLS", get("MMS_SMTP_STARTTLS") or "false"),
                username=get("MMS_SMTP_USERNAME"),
                password=get("MMS_SMTP_PASSWORD"),
                timeout=_parse_seconds("MMS_SMTP_TIMEOUT_SECONDS", get("MMS_SMTP_TIMEOUT_SECONDS"), 10.0),
                ca_file=get("MMS_SMTP_CA_FILE"),
            )
        return cls(
            retry=retry,
            webhook=webhook,
            smtp=smtp,
            max_total_attempts=parse_int(
                "MMS_NOTIFY_MAX_TOTAL_ATTEMPTS",
                get("MMS_NOTIFY_MAX_TOTAL_ATTEMPTS") or "20",
                minimum=1,
                maximum=1000,
            ),
            studio_url=get("MMS_STUDIO_URL"),
        )


def _parse_seconds(name: str, raw: str | None, default: float) -> float:
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0 or value > 3600:
        raise SettingsError(f"{name}={raw!r} must be between 0 and 3600 seconds")
    return value


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class AlertMessage:
    """What a notification says about one alert event, detached from any database session.

    Attributes:
        alert_id: Database id of the alert.
        event: ``opened`` or ``resolved``.
        project: Project slug.
        model: Model name.
        environment: Environment name.
        version: Model version (``""`` for a freshness alert).
        column: Column (``""`` for a freshness alert).
        metric: Metric name (``freshness`` for a freshness alert).
        operator: Comparison of the rule.
        threshold: Threshold of the rule (hours for freshness).
        statistic: Newest value seen (age in hours for freshness).
        severity: ``info``, ``warning`` or ``critical``.
        state: State of the alert when the message was built.
        rule_name: Name of the rule that raised it.
        window_start: First window of the breach.
        last_window_end: End of the newest breaching window.
        breaching_windows: Breaching windows counted so far.
        opened_at: When the alert opened.
        resolved_at: When it was resolved, if it was.
        resolution: Why it was resolved, if it was.
    """

    alert_id: int
    event: str
    project: str
    model: str
    environment: str
    version: str
    column: str
    metric: str
    operator: str
    threshold: float | None
    statistic: float | None
    severity: str
    state: str
    rule_name: str
    window_start: datetime
    last_window_end: datetime
    breaching_windows: int
    opened_at: datetime
    resolved_at: datetime | None = None
    resolution: str | None = None

    @classmethod
    def from_alert(cls, alert: Alert, project_slug: str, event: str) -> AlertMessage:
        """Describe ``alert`` (loaded with its rule) for the ``event`` being notified."""
        return cls(
            alert_id=alert.id,
            event=event,
            project=project_slug,
            model=alert.model,
            environment=alert.environment,
            version=alert.version,
            column=alert.column_name,
            metric=alert.metric,
            operator=alert.operator,
            threshold=alert.threshold,
            statistic=alert.last_statistic,
            severity=alert.severity,
            state=alert.state,
            rule_name=alert.rule.name,
            window_start=alert.window_start,
            last_window_end=alert.last_window_end,
            breaching_windows=alert.breaching_windows,
            opened_at=alert.opened_at,
            resolved_at=alert.resolved_at,
            resolution=alert.resolution,
        )

    def subject(self) -> str:
        """One line: severity, event, where and what (the chat text and the e-mail subject)."""
        where = f"{self.project}/{self.model} [{self.environment}]"
        return _single_line(
            f"[{self.severity.upper()}] alert #{self.alert_id} {self.event}: {where} {self.summary()}"
        )

    def summary(self) -> str:
        """What breached, in words."""
        value = _number(self.statistic)
        if self.metric == "freshness":
            return f"no new monitored data for {value} h (limit {_number(self.threshold)} h)"
        target = f"{self.metric} on {self.column}" if self.column else self.metric
        if self.operator == "drifted":
            condition = f"drifted (statistic {value})"
        else:
            condition = f"= {value} ({self.operator} {_number(self.threshold)})"
        windows = "window" if self.breaching_windows == 1 else "consecutive windows"
        return f"{target} {condition} for {self.breaching_windows} {windows}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (times as ISO 8601 UTC)."""
        return {
            "id": self.alert_id,
            "event": self.event,
            "project": self.project,
            "model": self.model,
            "environment": self.environment,
            "version": self.version,
            "column": self.column,
            "metric": self.metric,
            "operator": self.operator,
            "threshold": _json_number(self.threshold),
            "statistic": _json_number(self.statistic),
            "severity": self.severity,
            "state": self.state,
            "rule": self.rule_name,
            "window_start": _iso(self.window_start),
            "last_window_end": _iso(self.last_window_end),
            "breaching_windows": self.breaching_windows,
            "opened_at": _iso(self.opened_at),
            "resolved_at": _iso(self.resolved_at),
            "resolution": self.resolution,
        }


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value is not None else None


def _number(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4g}"


def _json_number(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _single_line(text: str) -> str:
    return _CONTROL_CHARS_RE.sub(" ", text)


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn treats &, < and > as control characters (links, mentions).
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def webhook_payload(
    message: AlertMessage, *, timestamp: int, studio_url: str | None = None
) -> dict[str, Any]:
    """The JSON body of a webhook: Slack-compatible ``text``/``blocks`` plus the structured ``alert``.

    Args:
        message: The alert event.
        timestamp: Unix seconds of the send; repeated in ``X-MMS-Timestamp``.
        studio_url: Base URL of the studio to link to, if any.
    """
    where = f"*{_slack_escape(message.project)} / {_slack_escape(message.model)}*"
    where += f" ({_slack_escape(message.environment)}"
    where += f", version {_slack_escape(message.version)})" if message.version else ")"
    details = f"{where}\n{_slack_escape(message.summary())}"
    if message.event == EVENT_RESOLVED and message.resolution:
        details += f"\nResolved: {_slack_escape(message.resolution)}"
    context = (
        f"alert #{message.alert_id} · rule {_slack_escape(message.rule_name)} · "
        f"since {_iso(message.window_start)} · severity {message.severity}"
    )
    if studio_url:
        link = f"{studio_url.rstrip('/')}/monitoring/alerts?alert={message.alert_id}"
        context += f" · <{_slack_escape(link)}|open in the studio>"
    return {
        "text": message.subject(),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": _slack_escape(message.subject())}},
            {"type": "section", "text": {"type": "mrkdwn", "text": details}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
        ],
        "alert": message.as_dict(),
        "timestamp": timestamp,
    }


def email_text(message: AlertMessage, *, studio_url: str | None = None) -> str:
    """Plain-text body of an alert e-mail."""
    lines = [
        message.subject(),
        "",
        f"Project:      {message.project}",
        f"Model:        {message.model}",
        f"Environment:  {message.environment}",
    ]
    if message.version:
        lines.append(f"Version:      {message.version}")
    lines += [
        f"What:         {message.summary()}",
        f"Rule:         {message.rule_name}",
        f"Severity:     {message.severity}",
        f"Since:        {_iso(message.window_start)}",
        f"State:        {message.state}",
    ]
    if message.resolution:
        lines.append(f"Resolution:   {message.resolution}")
    if studio_url:
        lines += ["", f"{studio_url.rstrip('/')}/monitoring/alerts?alert={message.alert_id}"]
    return "\n".join(_single_line(line) for line in lines) + "\n"


def sign_body(body: bytes, secret: str) -> str:
    """The ``X-MMS-Signature-256`` value of ``body``: ``sha256=<hex HMAC-SHA256 keyed with secret>``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, secret: str, signature: str | None) -> bool:
    """Whether ``signature`` (a header value) signs ``body`` with ``secret``, compared in constant time."""
    return signature is not None and hmac.compare_digest(sign_body(body, secret), signature)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class DeliveryResult:
    """Outcome of one send (all its attempts).

    Attributes:
        ok: The receiver accepted the notification.
        attempts: Attempts made (0 when the destination was refused before connecting).
        error: The last error, ``None`` on success.
        status: Last HTTP status or SMTP reply code, when one was received.
        permanent: The failure will not go away by retrying (a refused destination, a
            redirect, HTTP 4xx, SMTP 5xx, a disabled channel).
    """

    ok: bool
    attempts: int
    error: str | None = None
    status: int | None = None
    permanent: bool = False


class _AttemptFailed(Exception):
    """One attempt failed; the message is what gets recorded."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class _Retryable(_AttemptFailed):
    """A failure a later attempt may not meet (server busy, HTTP 5xx, SMTP 4xx)."""


class _Permanent(_AttemptFailed):
    """A failure another attempt cannot fix (HTTP 4xx, a redirect, SMTP 5xx)."""


class _Refused(_Permanent):
    """The destination was refused by policy before any connection was made."""


def _with_retries(
    attempt: Callable[[], tuple[int | None, str | None]],
    retry: RetryPolicy,
    sleep: Callable[[float], None],
) -> DeliveryResult:
    """Run ``attempt`` until it succeeds, fails permanently or the attempts run out.

    ``attempt`` returns ``(status, note)`` on success (``note`` is recorded as the
    error of a partial success) and raises :class:`_AttemptFailed` or a network
    error otherwise; network errors are retried.
    """
    last_error: str | None = None
    last_status: int | None = None
    for number in range(1, retry.max_attempts + 1):
        try:
            status, note = attempt()
            return DeliveryResult(ok=True, attempts=number, error=note, status=status)
        except _Refused as error:
            return DeliveryResult(ok=False, attempts=number - 1, error=str(error), permanent=True)
        except _Permanent as error:
            return DeliveryResult(
                ok=False, attempts=number, error=str(error), status=error.status, permanent=True
            )
        except _Retryable as error:
            last_error, last_status = str(error), error.status
        except (OSError, http.client.HTTPException, smtplib.SMTPException) as error:
            last_error, last_status = f"{type(error).__name__}: {error}", None
        if number < retry.max_attempts:
            sleep(retry.delay_after(number))
    return DeliveryResult(
        ok=False,
        attempts=retry.max_attempts,
        error=f"{last_error} (gave up after {retry.max_attempts} attempts)",
        status=last_status,
    )


# --------------------------------------------------------------------------- webhooks


@dataclass(frozen=True)
class WebhookTarget:
    """A webhook URL checked against the policy, pinned to the address that was checked.

    Attributes:
        scheme: ``https`` or ``http``.
        host: Host name as written in the URL (sent as ``Host`` and used for TLS).
        port: TCP port.
        path: Path and query to request.
        address: The IP address connected to.
    """

    scheme: str
    host: str
    port: int
    path: str
    address: str


def validate_webhook_url(url: str) -> str:
    """Check a webhook URL's form when a channel is configured (addresses are checked at send time).

    Accepts ``https://host/...``; ``http://`` only to ``localhost`` or a loopback
    address literal (development receivers).

    Returns:
        The URL, stripped.

    Raises:
        InvalidInput: for another scheme, a missing host, credentials in the URL or an over-long URL.
    """
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput("a webhook channel needs a URL")
    url = url.strip()
    if len(url) > MAX_URL_LENGTH or _CONTROL_CHARS_RE.search(url):
        raise InvalidInput(f"webhook URL must be at most {MAX_URL_LENGTH} printable characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError as error:
        raise InvalidInput(f"webhook URL {url!r} is malformed: {error}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http") or not parts.hostname:
        raise InvalidInput(f"webhook URL {url!r} must be https://host/...")
    if parts.username is not None or parts.password is not None:
        raise InvalidInput("webhook URL must not carry credentials: use the channel secret")
    if scheme == "http" and not _is_loopback_name(parts.hostname):
        raise InvalidInput(f"webhook URL {url!r}: plain http is only accepted to localhost; use https")
    return url


def _is_loopback_name(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _normalised_address(raw: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = ipaddress.ip_address(raw.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return address.is_global and not address.is_multicast


def resolve_webhook_target(
    url: str, policy: WebhookPolicy, resolver: Callable[..., list] = socket.getaddrinfo
) -> WebhookTarget:
    """Check ``url`` against ``policy`` and pin it to one checked address.

    Every address the host resolves to must be acceptable (an attacker controlling
    DNS could otherwise mix a public and a private answer).

    Args:
        url: The webhook URL.
        policy: The destination policy.
        resolver: ``socket.getaddrinfo``-compatible resolver.

    Returns:
        The target to connect to.

    Raises:
        UnsafeDestination: for a refused scheme, credentials in the URL or a refused address.
        OSError: when the host does not resolve (``socket.gaierror``: worth retrying).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise UnsafeDestination(f"malformed webhook URL: {error}") from None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in ("https", "http"):
        raise UnsafeDestination(f"scheme {scheme or '(none)'!r} is not allowed for webhooks: use https")
    if not host:
        raise UnsafeDestination("webhook URL has no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeDestination("webhook URL must not carry credentials")
    port = port or (443 if scheme == "https" else 80)
    infos = resolver(host, port, type=socket.SOCK_STREAM)
    addresses = [_normalised_address(info[4][0]) for info in infos]
    if not addresses:
        raise OSError(f"{host} resolved to no address")
    all_loopback = all(address.is_loopback for address in addresses)
    if scheme == "http" and not (policy.allow_http_loopback and all_loopback):
        raise UnsafeDestination(
            f"plain http to {host} refused: webhooks use https "
            "(http only to loopback, and only when MMS_WEBHOOK_ALLOW_HTTP_LOOPBACK is set)"
        )
    private_allowed = host.lower() in policy.allowed_private_hosts
    for address in addresses:
        if _is_public(address) or private_allowed:
            continue
        if address.is_loopback and policy.allow_http_loopback:
            continue
        raise UnsafeDestination(
            f"{host} resolves to the non-public address {address}: refused "
            "(list the host in MMS_WEBHOOK_ALLOWED_PRIVATE_HOSTS to allow an internal receiver)"
        )
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return WebhookTarget(scheme=scheme, host=host, port=port, path=path, address=str(addresses[0]))


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Plain HTTP to a pre-checked address; the ``Host`` header keeps the URL's host."""

    def __init__(self, target: WebhookTarget, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._pinned_address = target.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._pinned_address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a pre-checked address; certificate and SNI are checked against the URL's host."""

    def __init__(self, target: WebhookTarget, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(target.host, target.port, timeout=timeout, context=context)
        self._pinned_address = target.address
        self._tls_context = context

    def connect(self) -> None:
        raw = socket.create_connection((self._pinned_address, self.port), self.timeout)
        try:
            self.sock = self._tls_context.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise


def send_webhook(
    url: str,
    secret: str,
    payload_for: Callable[[int], Mapping[str, Any]],
    *,
    policy: WebhookPolicy,
    retry: RetryPolicy,
    delivery_id: str | None = None,
    event: str = EVENT_OPENED,
    sleep: Callable[[float], None] = time.sleep,
    tls_context: ssl.SSLContext | None = None,
) -> DeliveryResult:
    """POST a signed JSON notification, retrying transient failures.

    Args:
        url: Webhook URL.
        secret: Channel secret the body is signed with.
        payload_for: Builds the body for a Unix timestamp (each attempt is signed afresh).
        policy: Destination policy.
        retry: Retry policy.
        delivery_id: Sent as ``X-MMS-Delivery`` (same on every attempt); random when ``None``.
        event: Sent as ``X-MMS-Event``.
        sleep: Waits between attempts.
        tls_context: TLS settings for https (system trust store when ``None``).

    Returns:
        The outcome; never raises for network or receiver errors.
    """
    delivery_id = delivery_id or uuid.uuid4().hex
    context = tls_context or ssl.create_default_context()

    def attempt() -> tuple[int, None]:
        try:
            target = resolve_webhook_target(url, policy)
        except UnsafeDestination as error:
            raise _Refused(str(error)) from None
        timestamp = int(time.time())
        body = json.dumps(payload_for(timestamp), separators=(",", ":"), allow_nan=False).encode("utf-8")
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: sign_body(body, secret),
            TIMESTAMP_HEADER: str(timestamp),
            DELIVERY_HEADER: delivery_id,
            EVENT_HEADER: event,
        }
        connection: http.client.HTTPConnection = (
            _PinnedHTTPSConnection(target, policy.timeout, context)
            if target.scheme == "https"
            else _PinnedHTTPConnection(target, policy.timeout)
        )
        try:
            connection.request("POST", target.path, body=body, headers=headers)
            response = connection.getresponse()
            status = response.status
            excerpt = response.read(MAX_RESPONSE_BYTES).decode("utf-8", "replace").strip()
            location = response.getheader("Location")
        except ssl.SSLCertVerificationError as error:
            raise _Permanent(f"TLS certificate of {target.host} refused: {error.verify_message}") from None
        finally:
            connection.close()
        if 200 <= status < 300:
            return status, None
        if 300 <= status < 400:
            raise _Permanent(
                f"HTTP {status} redirect to {_single_line(location or '(no Location)')[:200]} not followed "
                "(webhooks never follow redirects)",
                status,
            )
        message = f"HTTP {status} from {target.host}: {_single_line(excerpt)[:300]}".rstrip(": ")
        if status in RETRYABLE_HTTP_STATUSES:
            raise _Retryable(message, status)
        raise _Permanent(message, status)

    return _with_retries(attempt, retry, sleep)


# --------------------------------------------------------------------------- e-mail


def validate_recipients(recipients: Iterable[str]) -> list[str]:
    """Check e-mail recipients: plain ``local@domain`` addresses, 1 to 50 of them, no duplicates.

    Raises:
        InvalidInput: naming the first bad address.
    """
    if isinstance(recipients, str):
        recipients = [recipients]
    cleaned: list[str] = []
    for raw in recipients:
        address = raw.strip() if isinstance(raw, str) else ""
        if not _EMAIL_RE.fullmatch(address) or ".." in address:
            raise InvalidInput(f"{raw!r} is not a plain e-mail address (local@domain)")
        if address.lower() not in (seen.lower() for seen in cleaned):
            cleaned.append(address)
    if not cleaned:
        raise InvalidInput("an e-mail channel needs at least one recipient")
    if len(cleaned) > MAX_RECIPIENTS:
        raise InvalidInput(f"an e-mail channel takes at most {MAX_RECIPIENTS} recipients")
    return cleaned


def send_email(
    smtp: SmtpConfig,
    recipients: Sequence[str],
    subject: str,
    text: str,
    *,
    retry: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
) -> DeliveryResult:
    """Send a plain-text e-mail through the relay, retrying transient failures.

    Returns:
        The outcome; never raises for network or relay errors.
    """
    if smtp.username and not smtp.starttls:
        return DeliveryResult(
            ok=False,
            attempts=0,
            error="refusing to send SMTP credentials without STARTTLS (set MMS_SMTP_STARTTLS)",
            permanent=True,
        )
    message = EmailMessage()
    message["Subject"] = _single_line(subject)[:250]
    message["From"] = smtp.sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=smtp.sender.rpartition("@")[2] or None)
    message.set_content(text)

    def attempt() -> tuple[int, str | None]:
        try:
            with smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout) as client:
                client.ehlo()
                if smtp.starttls:
                    client.starttls(context=ssl.create_default_context(cafile=smtp.ca_file))
                    client.ehlo()
                if smtp.username:
                    client.login(smtp.username, smtp.password or "")
                refused = client.send_message(message)
        except smtplib.SMTPRecipientsRefused as error:
            raise _Permanent(f"every recipient was refused: {sorted(error.recipients)}") from None
        except smtplib.SMTPNotSupportedError as error:
            raise _Permanent(f"the relay does not support what was asked: {error}") from None
        except smtplib.SMTPAuthenticationError as error:
            raise _Permanent(f"SMTP login refused ({error.smtp_code})", error.smtp_code) from None
        except smtplib.SMTPResponseException as error:
            text = error.smtp_error.decode("utf-8", "replace") if isinstance(error.smtp_error, bytes) else ""
            message_text = f"SMTP {error.smtp_code}: {_single_line(text)[:300]}"
            if 400 <= error.smtp_code < 500:
                raise _Retryable(message_text, error.smtp_code) from None
            raise _Permanent(message_text, error.smtp_code) from None
        except ssl.SSLCertVerificationError as error:
            raise _Permanent(f"TLS certificate of {smtp.host} refused: {error.verify_message}") from None
        # Some recipients refused: the others have their copy, so a retry would duplicate it.
        return 250, f"accepted, but refused for {sorted(refused)}" if refused else None

    return _with_retries(attempt, retry, sleep)


# --------------------------------------------------------------------------- channels


def _validate_channel_name(name: str) -> str:
    if not isinstance(name, str) or not _CHANNEL_NAME_RE.fullmatch(name):
        raise InvalidInput("channel name must be 1 to 64 characters of letters, digits, '_', '.' or '-'")
    return name


def _validate_severity(severity: str) -> str:
    if severity not in ALERT_SEVERITIES:
        raise InvalidInput(f"severity must be one of {', '.join(ALERT_SEVERITIES)}, not {severity!r}")
    return severity


def _validate_secret(secret: str) -> str:
    if not isinstance(secret, str) or len(secret) < MIN_SECRET_LENGTH or len(secret) > 255:
        raise InvalidInput(f"webhook secret must be {MIN_SECRET_LENGTH} to 255 characters")
    return secret


def _project(session: Session, slug: str) -> Project:
    project = session.scalars(select(Project).where(Project.slug == slug)).first()
    if project is None:
        raise Conflict(f"no project with slug {slug!r}")
    return project


def _channel_audit(channel: NotificationChannel) -> dict[str, Any]:
    # Never the secret: the audit log is readable by auditors.
    return {
        "name": channel.name,
        "kind": channel.kind,
        "url": channel.url,
        "recipients": list(channel.recipients or []),
        "min_severity": channel.min_severity,
        "enabled": channel.enabled,
    }


def create_channel(
    session: Session,
    actor: Actor,
    project: str,
    *,
    name: str,
    kind: str,
    url: str | None = None,
    secret: str | None = None,
    recipients: Sequence[str] = (),
    min_severity: str = "info",
) -> NotificationChannel:
    """Add a notification channel to a project.

    Args:
        session: Session of the transaction (the caller commits).
        actor: Who configures it; needs ``MANAGE_ALERT_RULES`` on the project.
        project: Project slug.
        name: Channel name, unique in the project.
        kind: ``webhook`` or ``email``.
        url: Webhook URL (``https``; ``http`` only to localhost).
        secret: Webhook signing secret (16-255 characters); generated when ``None``
            (read it back from the returned channel to configure the receiver).
        recipients: E-mail addresses of an ``email`` channel.
        min_severity: Least severe alert the channel receives.

    Returns:
        The new, flushed channel.

    Raises:
        Forbidden: if ``actor`` lacks ``MANAGE_ALERT_RULES`` on the project.
        InvalidInput: for a bad name, kind, URL, secret, recipient or severity.
        Conflict: if the project does not exist or the name is taken.
    """
    require(actor, Permission.MANAGE_ALERT_RULES, project)
    _validate_channel_name(name)
    _validate_severity(min_severity)
    if kind not in CHANNEL_KINDS:
        raise InvalidInput(f"channel kind must be one of {', '.join(CHANNEL_KINDS)}, not {kind!r}")
    owner = _project(session, project)
    if kind == "webhook":
        if recipients:
            raise InvalidInput("a webhook channel takes no e-mail recipients")
        channel = NotificationChannel(
            kind=kind,
            url=validate_webhook_url(url or ""),
            secret=_validate_secret(secret) if secret is not None else secrets.token_urlsafe(32),
            recipients=[],
        )
    else:
        if url or secret:
            raise InvalidInput("an e-mail channel takes recipients, not a URL or secret")
        channel = NotificationChannel(
            kind=kind, url=None, secret=None, recipients=validate_recipients(recipients)
        )
    existing = session.scalars(
        select(NotificationChannel.id).where(
            NotificationChannel.project_id == owner.id, NotificationChannel.name == name
        )
    ).first()
    if existing is not None:
        raise Conflict(f"project {project!r} already has a channel named {name!r}")
    channel.project_id = owner.id
    channel.name = name
    channel.min_severity = min_severity
    channel.enabled = True
    channel.created_by_id = actor.user_id
    session.add(channel)
    session.flush()
    audit.append(
        session,
        actor.username,
        "alert_channel.create",
        f"alert_channel:{project}/{name}",
        _channel_audit(channel),
    )
    return channel


def _channel_for(session: Session, actor: Actor, channel_id: int) -> tuple[NotificationChannel, str]:
    row = session.execute(
        select(NotificationChannel, Project.slug)
        .join(Project, Project.id == NotificationChannel.project_id)
        .where(NotificationChannel.id == channel_id)
    ).first()
    if row is None:
        raise Conflict(f"no notification channel {channel_id}")
    channel, slug = row
    require(actor, Permission.MANAGE_ALERT_RULES, slug)
    return channel, slug


def update_channel(
    session: Session,
    actor: Actor,
    channel_id: int,
    *,
    url: str | None = None,
    secret: str | None = None,
    recipients: Sequence[str] | None = None,
    min_severity: str | None = None,
    enabled: bool | None = None,
) -> NotificationChannel:
    """Change a channel; arguments left ``None`` keep their value.

    Raises:
        Forbidden: if ``actor`` lacks ``MANAGE_ALERT_RULES`` on the channel's project.
        InvalidInput: for a value that does not fit the channel's kind.
        Conflict: if there is no such channel.
    """
    channel, slug = _channel_for(session, actor, channel_id)
    changes: dict[str, Any] = {}
    if url is not None:
        if channel.kind != "webhook":
            raise InvalidInput("only webhook channels have a URL")
        url = validate_webhook_url(url)
        if url != channel.url:
            changes["url"] = {"from": channel.url, "to": url}
            channel.url = url
    if secret is not None:
        if channel.kind != "webhook":
            raise InvalidInput("only webhook channels have a secret")
        channel.secret = _validate_secret(secret)
        changes["secret"] = "rotated"  # noqa: S105 - a note for the audit log, not a secret
    if recipients is not None:
        if channel.kind != "email":
            raise InvalidInput("only e-mail channels have recipients")
        cleaned = validate_recipients(recipients)
        if cleaned != list(channel.recipients or []):
            changes["recipients"] = {"from": list(channel.recipients or []), "to": cleaned}
            channel.recipients = cleaned
    if min_severity is not None and _validate_severity(min_severity) != channel.min_severity:
        changes["min_severity"] = {"from": channel.min_severity, "to": min_severity}
        channel.min_severity = min_severity
    if enabled is not None and bool(enabled) != channel.enabled:
        changes["enabled"] = {"from": channel.enabled, "to": bool(enabled)}
        channel.enabled = bool(enabled)
    if changes:
        session.flush()
        audit.append(
            session, actor.username, "alert_channel.update", f"alert_channel:{slug}/{channel.name}", changes
        )
    return channel


def disable_channel(session: Session, actor: Actor, channel_id: int) -> NotificationChannel:
    """Stop sending to a channel (kept for its delivery history).

    Raises:
        Forbidden: if ``actor`` lacks ``MANAGE_ALERT_RULES`` on the channel's project.
        Conflict: if there is no such channel.
    """
    return update_channel(session, actor, channel_id, enabled=False)


def list_channels(session: Session, project: str) -> list[NotificationChannel]:
    """The channels of a project, by name (no permission check: callers check VIEW_MONITORING)."""
    owner = _project(session, project)
    return list(
        session.scalars(
            select(NotificationChannel)
            .where(NotificationChannel.project_id == owner.id)
            .order_by(NotificationChannel.name)
        )
    )


# --------------------------------------------------------------------------- queueing and delivery


def queue_deliveries(session: Session, alert: Alert, event: str) -> list[AlertDelivery]:
    """Record a ``pending`` delivery of ``event`` to every enabled channel that takes the alert's severity.

    Runs in the caller's transaction (the one that opens or resolves the alert), so
    the intent to notify commits with the alert. Existing rows for the same
    alert, channel and event are left alone.

    Returns:
        The new deliveries, flushed.
    """
    if event not in EVENTS:
        raise ValueError(f"event must be one of {', '.join(EVENTS)}, not {event!r}")
    rank = ALERT_SEVERITIES.index(alert.severity)
    channels = session.scalars(
        select(NotificationChannel).where(
            NotificationChannel.project_id == alert.project_id, NotificationChannel.enabled.is_(True)
        )
    )
    existing = set(
        session.scalars(
            select(AlertDelivery.channel_id).where(
                AlertDelivery.alert_id == alert.id, AlertDelivery.event == event
            )
        )
    )
    created = []
    for channel in channels:
        if channel.id in existing or ALERT_SEVERITIES.index(channel.min_severity) > rank:
            continue
        delivery = AlertDelivery(
            alert_id=alert.id, channel_id=channel.id, event=event, status=PENDING, attempts=0
        )
        session.add(delivery)
        created.append(delivery)
    session.flush()
    return created


@dataclass(frozen=True)
class DeliveryOutcome:
    """What happened to one delivery row in :func:`deliver`.

    Attributes:
        delivery_id: Id of the :class:`~jobs.db.alerting.AlertDelivery`.
        alert_id: Id of the alert.
        channel: Channel name.
        event: ``opened`` or ``resolved``.
        status: The row's status afterwards (``delivered`` or ``failed``), or
            ``skipped`` when another sender held it or it was already delivered.
        attempts: Attempts made by this call.
        error: Last error of this call.
    """

    delivery_id: int
    alert_id: int
    channel: str
    event: str
    status: str
    attempts: int
    error: str | None = None


@dataclass(frozen=True)
class _Job:
    delivery_id: int
    alert_id: int
    event: str
    channel_name: str
    channel_kind: str
    channel_enabled: bool
    url: str | None
    secret: str | None
    recipients: tuple[str, ...]
    message: AlertMessage


def _claim(session_factory: sessionmaker[Session], delivery_id: int, now: datetime) -> _Job | None:
    """Mark a delivery ``sending`` by compare-and-set and load what sending needs.

    Returns:
        ``None`` when the row is not claimable (delivered, or held by another sender).
    """
    with session_scope(session_factory, write=True) as session:
        claimed = session.execute(
            update(AlertDelivery)
            .where(
                AlertDelivery.id == delivery_id,
                or_(
                    AlertDelivery.status.in_((PENDING, FAILED)),
                    (AlertDelivery.status == SENDING)
                    & (AlertDelivery.last_attempt_at < now - SENDING_CLAIM_TIMEOUT),
                ),
            )
            .values(status=SENDING, last_attempt_at=now)
        ).rowcount
        if claimed != 1:
            return None
        delivery = session.get(AlertDelivery, delivery_id)
        assert delivery is not None
        alert = delivery.alert
        channel = delivery.channel
        slug = session.scalar(select(Project.slug).where(Project.id == alert.project_id))
        return _Job(
            delivery_id=delivery.id,
            alert_id=alert.id,
            event=delivery.event,
            channel_name=channel.name,
            channel_kind=channel.kind,
            channel_enabled=channel.enabled,
            url=channel.url,
            secret=channel.secret,
            recipients=tuple(channel.recipients or ()),
            message=AlertMessage.from_alert(alert, slug or "", delivery.event),
        )


def _send(job: _Job, options: DeliveryOptions, sleep: Callable[[float], None]) -> DeliveryResult:
    if not job.channel_enabled:
        return DeliveryResult(ok=False, attempts=0, error="channel disabled: not sent", permanent=True)
    if job.channel_kind == "webhook":
        return send_webhook(
            job.url or "",
            job.secret or "",
            lambda timestamp: webhook_payload(
                job.message, timestamp=timestamp, studio_url=options.studio_url
            ),
            policy=options.webhook,
            retry=options.retry,
            delivery_id=f"mms-delivery-{job.delivery_id}",
            event=job.event,
            sleep=sleep,
        )
    if options.smtp is None:
        return DeliveryResult(ok=False, attempts=0, error="no SMTP relay configured (set MMS_SMTP_HOST)")
    return send_email(
        options.smtp,
        job.recipients,
        job.message.subject(),
        email_text(job.message, studio_url=options.studio_url),
        retry=options.retry,
        sleep=sleep,
    )


def deliver(
    session_factory: sessionmaker[Session],
    delivery_ids: Iterable[int],
    options: DeliveryOptions,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> list[DeliveryOutcome]:
    """Send the given deliveries now and record each result on its row.

    Each row is claimed first (compare-and-set to ``sending``), so two senders never
    send the same row at once; the network calls run outside any transaction. A
    failure becomes ``failed`` (retried by :func:`deliver_pending`) or, when it is
    permanent or the row ran out of attempts, ``abandoned``.

    Returns:
        One outcome per delivery id, in order.
    """
    outcomes = []
    for delivery_id in delivery_ids:
        job = _claim(session_factory, delivery_id, utcnow())
        if job is None:
            outcomes.append(DeliveryOutcome(delivery_id, 0, "", "", "skipped", 0, "not pending"))
            continue
        try:
            result = _send(job, options, sleep)
        except Exception as error:  # noqa: BLE001 - a bug in one channel must not strand the row in "sending"
            result = DeliveryResult(ok=False, attempts=1, error=f"{type(error).__name__}: {error}")
        finished = utcnow()
        with session_scope(session_factory, write=True) as session:
            delivery = session.get(AlertDelivery, delivery_id)
            assert delivery is not None
            delivery.attempts += result.attempts
            delivery.last_attempt_at = finished
            delivery.last_error = result.error
            if result.ok:
                delivery.status = DELIVERED
                delivery.delivered_at = finished
            elif result.permanent or delivery.attempts >= options.max_total_attempts:
                delivery.status = ABANDONED
            else:
                delivery.status = FAILED
            status = delivery.status
        outcomes.append(
            DeliveryOutcome(
                delivery_id=delivery_id,
                alert_id=job.alert_id,
                channel=job.channel_name,
                event=job.event,
                status=status,
                attempts=result.attempts,
                error=result.error,
            )
        )
    return outcomes


def deliver_pending(
    session_factory: sessionmaker[Session],
    options: DeliveryOptions,
    *,
    project: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[DeliveryOutcome]:
    """Send every delivery still to do: pending, failed, or abandoned mid-send by a crashed sender.

    Deliveries older than ``options.give_up_after`` are marked ``abandoned`` instead
    of being sent.

    Args:
        session_factory: Session factory of the metadata database.
        options: Delivery options.
        project: Only this project's deliveries.
        sleep: Waits between attempts.

    Returns:
        The outcomes of the deliveries sent, oldest first.
    """
    now = utcnow()
    retryable = or_(
        AlertDelivery.status.in_((PENDING, FAILED)),
        (AlertDelivery.status == SENDING) & (AlertDelivery.last_attempt_at < now - SENDING_CLAIM_TIMEOUT),
    )
    in_project = (
        select(Alert.id).join(Project, Project.id == Alert.project_id).where(Project.slug == project)
        if project is not None
        else None
    )
    with session_scope(session_factory, write=True) as session:
        too_old = update(AlertDelivery).where(
            retryable, AlertDelivery.created_at < now - options.give_up_after
        )
        if in_project is not None:
            too_old = too_old.where(AlertDelivery.alert_id.in_(in_project))
        session.execute(
            too_old.values(
                status=ABANDONED,
                last_error=func.coalesce(AlertDelivery.last_error, "never sent")
                + f" (gave up: not delivered within {options.give_up_after})",
            ).execution_options(synchronize_session=False)
        )
        query = select(AlertDelivery.id).where(retryable).order_by(AlertDelivery.id)
        if in_project is not None:
            query = query.where(AlertDelivery.alert_id.in_(in_project))
        ids = list(session.scalars(query))
    return deliver(session_factory, ids, options, sleep=sleep)

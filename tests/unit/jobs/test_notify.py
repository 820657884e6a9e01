"""Notifications: payload, signature and destination policy (unit); real webhook and SMTP delivery.

The integration tests talk to real servers on 127.0.0.1: an ``http.server`` in a
thread as the webhook receiver and an ``aiosmtpd`` relay (with and without
STARTTLS), each on a free port.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from email import message_from_bytes
from email import policy as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from app.settings import SettingsError
from jobs.notify import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    AlertMessage,
    DeliveryOptions,
    DeliveryResult,
    RetryPolicy,
    SmtpConfig,
    UnsafeDestination,
    WebhookPolicy,
    email_text,
    resolve_webhook_target,
    send_email,
    send_webhook,
    sign_body,
    validate_recipients,
    validate_webhook_url,
    verify_signature,
    webhook_payload,
)
from jobs.users import InvalidInput

unit = pytest.mark.unit
integration = pytest.mark.integration

SECRET = "s3cret-signing-key-0123456789"
FAST_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.01, multiplier=2.0, max_delay=0.05)
LOOPBACK_OK = WebhookPolicy(timeout=5.0, allow_http_loopback=True)
T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def _message(**changes: object) -> AlertMessage:
    fields = {
        "alert_id": 7,
        "event": "opened",
        "project": "credit-risk",
        "model": "credit-default",
        "environment": "prod",
        "version": "3",
        "column": "income",
        "metric": "psi",
        "operator": ">",
        "threshold": 0.2,
        "statistic": 0.31,
        "severity": "critical",
        "state": "open",
        "rule_name": "income <drift> & co",
        "window_start": T0,
        "last_window_end": T0 + dt.timedelta(hours=3),
        "breaching_windows": 3,
        "opened_at": T0 + dt.timedelta(hours=3, minutes=5),
    }
    fields.update(changes)
    return AlertMessage(**fields)  # type: ignore[arg-type]


def _static_resolver(*addresses: str) -> Callable[..., list]:
    def resolve(host: str, port: int, type: int = 0) -> list:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)) for address in addresses]

    return resolve


# --------------------------------------------------------------------------- unit


@unit
def test_signature_is_the_hex_hmac_sha256_of_the_body() -> None:
    body = b'{"text":"hello"}'
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert sign_body(body, SECRET) == expected
    assert verify_signature(body, SECRET, expected)
    assert not verify_signature(body + b" ", SECRET, expected)
    assert not verify_signature(body, SECRET + "x", expected)
    assert not verify_signature(body, SECRET, None)


@unit
def test_webhook_payload_is_slack_compatible_and_carries_the_structured_alert() -> None:
    payload = webhook_payload(_message(), timestamp=1_772_000_000, studio_url="https://studio.example.com/")
    assert payload["text"].startswith("[CRITICAL] alert #7 opened: credit-risk/credit-default [prod]")
    assert "psi on income = 0.31 (> 0.2) for 3 consecutive windows" in payload["text"]
    assert [block["type"] for block in payload["blocks"]] == ["section", "section", "context"]
    context = payload["blocks"][2]["elements"][0]["text"]
    # Slack control characters of user text are escaped; the studio link is a real Slack link.
    assert "income &lt;drift&gt; &amp; co" in context
    assert "<https://studio.example.com/monitoring/alerts?alert=7|open in the studio>" in context
    assert payload["alert"] == {
        "id": 7,
        "event": "opened",
        "project": "credit-risk",
        "model": "credit-default",
        "environment": "prod",
        "version": "3",
        "column": "income",
        "metric": "psi",
        "operator": ">",
        "threshold": 0.2,
        "statistic": 0.31,
        "severity": "critical",
        "state": "open",
        "rule": "income <drift> & co",
        "window_start": "2026-03-01T00:00:00Z",
        "last_window_end": "2026-03-01T03:00:00Z",
        "breaching_windows": 3,
        "opened_at": "2026-03-01T03:05:00Z",
        "resolved_at": None,
        "resolution": None,
    }
    assert payload["timestamp"] == 1_772_000_000
    json.dumps(payload, allow_nan=False)  # serialisable as sent


@unit
def test_freshness_and_resolved_messages_read_naturally() -> None:
    stale = _message(
        metric="freshness", column="", version="", statistic=7.5, threshold=6.0, breaching_windows=1
    )
    assert "no new monitored data for 7.5 h (limit 6 h)" in stale.subject()
    resolved = _message(event="resolved", state="resolved", resolution="recovered: 3 consecutive window(s)")
    text = email_text(resolved)
    assert "Resolution:   recovered: 3 consecutive window(s)" in text
    assert resolved.subject().startswith("[CRITICAL] alert #7 resolved:")
    # A value that is not finite never reaches the JSON body.
    assert _message(statistic=float("nan")).as_dict()["statistic"] is None


@unit
@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://hooks.example.com/x", "must be https"),
        ("file:///etc/passwd", "must be https"),
        ("http://hooks.example.com/x", "plain http is only accepted to localhost"),
        ("https://user:pw@hooks.example.com/x", "must not carry credentials"),
        ("https:///no-host", "must be https"),
        ("https://hooks.example.com:99999/x", "malformed"),
        ("", "needs a URL"),
    ],
)
def test_webhook_urls_are_checked_when_a_channel_is_configured(url: str, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        validate_webhook_url(url)


@unit
def test_acceptable_webhook_urls() -> None:
    assert validate_webhook_url(" https://hooks.slack.com/services/T0/B0/xyz ") == (
        "https://hooks.slack.com/services/T0/B0/xyz"
    )
    assert validate_webhook_url("http://127.0.0.1:8080/hook") == "http://127.0.0.1:8080/hook"
    assert validate_webhook_url("http://localhost/hook") == "http://localhost/hook"


@unit
@pytest.mark.parametrize(
    ("url", "policy", "reason"),
    [
        ("ftp://127.0.0.1/x", LOOPBACK_OK, "scheme 'ftp' is not allowed"),
        ("gopher://127.0.0.1/x", LOOPBACK_OK, "scheme 'gopher' is not allowed"),
        ("http://127.0.0.1:9/x", WebhookPolicy(), "plain http to 127.0.0.1 refused"),
        ("https://127.0.0.1/x", WebhookPolicy(), "non-public address 127.0.0.1"),
        ("https://10.1.2.3/x", LOOPBACK_OK, "non-public address 10.1.2.3"),
        ("https://192.168.0.10/x", LOOPBACK_OK, "non-public address 192.168.0.10"),
        ("https://172.16.5.5/x", LOOPBACK_OK, "non-public address 172.16.5.5"),
        ("https://169.254.169.254/latest/meta-data", LOOPBACK_OK, "non-public address 169.254.169.254"),
        ("https://100.64.0.1/x", LOOPBACK_OK, "non-public address 100.64.0.1"),
        ("https://0.0.0.0/x", LOOPBACK_OK, "non-public address 0.0.0.0"),
        ("https://[::1]/x", WebhookPolicy(), "non-public address ::1"),
        ("https://[::ffff:127.0.0.1]/x", WebhookPolicy(), "non-public address 127.0.0.1"),
        ("https://[fe80::1]/x", LOOPBACK_OK, "non-public address fe80::1"),
        ("http://10.0.0.1/x", LOOPBACK_OK, "plain http to 10.0.0.1 refused"),
        ("https://u:p@93.184.216.34/x", LOOPBACK_OK, "must not carry credentials"),
    ],
)
def test_destination_policy_refuses_schemes_and_non_public_addresses(
    url: str, policy: WebhookPolicy, reason: str
) -> None:
    with pytest.raises(UnsafeDestination, match=re.escape(reason)):
        resolve_webhook_target(url, policy)


@unit
def test_destination_policy_checks_every_resolved_address_and_pins_the_connection() -> None:
    public = resolve_webhook_target(
        "https://hooks.example.com/services/x?y=1",
        WebhookPolicy(),
        resolver=_static_resolver("93.184.216.34"),
    )
    assert (public.scheme, public.host, public.port, public.path, public.address) == (
        "https",
        "hooks.example.com",
        443,
        "/services/x?y=1",
        "93.184.216.34",
    )
    # One private answer among public ones is enough to refuse (DNS could pick either).
    with pytest.raises(UnsafeDestination, match=re.escape("non-public address 10.0.0.7")):
        resolve_webhook_target(
            "https://hooks.example.com/x",
            WebhookPolicy(),
            resolver=_static_resolver("93.184.216.34", "10.0.0.7"),
        )
    internal = WebhookPolicy(allowed_private_hosts=frozenset({"alerts.internal"}))
    target = resolve_webhook_target(
        "https://alerts.internal/x", internal, resolver=_static_resolver("10.0.0.7")
    )
    assert target.address == "10.0.0.7"
    with pytest.raises(UnsafeDestination):
        resolve_webhook_target("https://other.internal/x", internal, resolver=_static_resolver("10.0.0.7"))
    # Loopback by name is loopback too.
    with pytest.raises(UnsafeDestination, match="plain http to localhost refused"):
        resolve_webhook_target("http://localhost:9/x", WebhookPolicy())
    assert resolve_webhook_target("http://localhost:9/x", LOOPBACK_OK).address in ("127.0.0.1", "::1")


@unit
def test_retry_policy_backs_off_exponentially_up_to_the_cap() -> None:
    policy = RetryPolicy(max_attempts=6, initial_delay=1.0, multiplier=2.0, max_delay=5.0)
    assert [policy.delay_after(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    with pytest.raises(ValueError, match="at least 1"):
        RetryPolicy(max_attempts=0)


@unit
def test_recipients_are_plain_addresses() -> None:
    assert validate_recipients([" ops@example.com", "OPS@example.com", "ml@example.org"]) == [
        "ops@example.com",
        "ml@example.org",
    ]
    for bad in (
        ["Ops <ops@example.com>"],
        ["ops@example.com\r\nBcc: x@evil.test"],
        ["no-at-sign"],
        [],
        ["a@b..c"],
    ):
        with pytest.raises(InvalidInput):
            validate_recipients(bad)


@unit
def test_delivery_options_from_environment() -> None:
    options = DeliveryOptions.from_environ(
        {
            "MMS_WEBHOOK_ALLOW_HTTP_LOOPBACK": "true",
            "MMS_WEBHOOK_ALLOWED_PRIVATE_HOSTS": "Alerts.Internal, hooks.lan",
            "MMS_WEBHOOK_TIMEOUT_SECONDS": "2.5",
            "MMS_NOTIFY_MAX_ATTEMPTS": "5",
            "MMS_NOTIFY_BACKOFF_SECONDS": "0.5",
            "MMS_SMTP_HOST": "smtp.example.com",
            "MMS_SMTP_PORT": "587",
            "MMS_SMTP_STARTTLS": "yes",
            "MMS_SMTP_SENDER": "alerts@example.com",
        }
    )
    assert options.webhook == WebhookPolicy(
        timeout=2.5,
        allow_http_loopback=True,
        allowed_private_hosts=frozenset({"alerts.internal", "hooks.lan"}),
    )
    assert (options.retry.max_attempts, options.retry.initial_delay) == (5, 0.5)
    assert options.smtp == SmtpConfig(
        host="smtp.example.com", port=587, sender="alerts@example.com", starttls=True
    )
    assert DeliveryOptions.from_environ({}).smtp is None
    with pytest.raises(SettingsError, match="refused when MMS_ENV=production"):
        DeliveryOptions.from_environ({"MMS_ENV": "production", "MMS_WEBHOOK_ALLOW_HTTP_LOOPBACK": "1"})
    with pytest.raises(SettingsError, match="MMS_WEBHOOK_TIMEOUT_SECONDS"):
        DeliveryOptions.from_environ({"MMS_WEBHOOK_TIMEOUT_SECONDS": "soon"})


# --------------------------------------------------------------------------- a real webhook receiver


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1 answering from a script of (status, headers) responses."""

    responses: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    delay: float = 0.0
    tls: ssl.SSLContext | None = None
    requests: list[Received] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.server.server_address[1]}/hooks/alerts"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                receiver.requests.append(Received(self.path, dict(self.headers.items()), body))
                if receiver.delay:
                    time.sleep(receiver.delay)
                status, headers = receiver.responses.pop(0) if receiver.responses else (200, {})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                payload = b"ok" if status < 300 else b"receiver says no"
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                # The client may have given up already (timeout tests).
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if self.tls is not None:
            self.server.socket = self.tls.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver().start()
    yield started
    started.stop()


@pytest.fixture
def second_receiver() -> Iterator[Receiver]:
    started = Receiver().start()
    yield started
    started.stop()


def _send(
    url: str,
    *,
    policy: WebhookPolicy = LOOPBACK_OK,
    retry: RetryPolicy = FAST_RETRY,
    sleeps=None,
    tls_context: ssl.SSLContext | None = None,
):
    message = _message()
    return send_webhook(
        url,
        SECRET,
        lambda timestamp: webhook_payload(message, timestamp=timestamp),
        policy=policy,
        retry=retry,
        delivery_id="delivery-42",
        sleep=(lambda seconds: sleeps.append(seconds)) if sleeps is not None else time.sleep,
        tls_context=tls_context,
    )


@integration
def test_webhook_delivery_is_signed_and_timestamped(receiver: Receiver) -> None:
    before = int(time.time())
    result = _send(receiver.url)
    assert (result.ok, result.attempts, result.status, result.error) == (True, 1, 200, None)
    [request] = receiver.requests
    assert request.path == "/hooks/alerts"
    # The receiver's side of the contract: HMAC of the raw body with the shared secret.
    assert (
        request.headers[SIGNATURE_HEADER]
        == "sha256=" + hmac.new(SECRET.encode(), request.body, "sha256").hexdigest()
    )
    assert verify_signature(request.body, SECRET, request.headers[SIGNATURE_HEADER])
    assert not verify_signature(request.body, "another-secret-of-16+", request.headers[SIGNATURE_HEADER])
    body = json.loads(request.body)
    assert body["alert"]["id"] == 7 and body["alert"]["severity"] == "critical"
    assert body["text"].startswith("[CRITICAL] alert #7 opened")
    # The timestamp header repeats the signed body's timestamp, so a replay can be detected.
    assert int(request.headers[TIMESTAMP_HEADER]) == body["timestamp"]
    assert before <= body["timestamp"] <= int(time.time())
    assert request.headers[DELIVERY_HEADER] == "delivery-42"
    assert request.headers["Content-Type"].startswith("application/json")


@integration
def test_receiver_failing_twice_then_succeeding_takes_three_attempts(receiver: Receiver) -> None:
    receiver.responses = [(503, {}), (500, {})]
    sleeps: list[float] = []
    result = _send(receiver.url, sleeps=sleeps)
    assert (result.ok, result.attempts, result.status) == (True, 3, 200)
    assert len(receiver.requests) == 3
    assert sleeps == [0.01, 0.02]  # exponential backoff between the attempts
    # Every attempt is signed afresh and keeps the delivery id the receiver deduplicates with.
    assert {r.headers[DELIVERY_HEADER] for r in receiver.requests} == {"delivery-42"}
    assert all(verify_signature(r.body, SECRET, r.headers[SIGNATURE_HEADER]) for r in receiver.requests)


@integration
def test_a_receiver_that_keeps_failing_exhausts_the_attempts(receiver: Receiver) -> None:
    receiver.responses = [(503, {})] * 3
    result = _send(receiver.url)
    assert (result.ok, result.attempts, result.status) == (False, 3, 503)
    assert "HTTP 503" in result.error and "gave up after 3 attempts" in result.error


@integration
def test_client_errors_are_not_retried(receiver: Receiver) -> None:
    receiver.responses = [(410, {})]
    result = _send(receiver.url)
    assert (result.ok, result.attempts, result.status) == (False, 1, 410)
    assert "receiver says no" in result.error
    assert len(receiver.requests) == 1


@integration
@pytest.mark.parametrize(
    "target", ["private-receiver", "http://169.254.169.254/latest/meta-data/", "http://10.0.0.5/"]
)
def test_redirects_are_never_followed(receiver: Receiver, second_receiver: Receiver, target: str) -> None:
    location = second_receiver.url if target == "private-receiver" else target
    receiver.responses = [(302, {"Location": location})]
    result = _send(receiver.url)
    assert (result.ok, result.attempts, result.status) == (False, 1, 302)
    assert f"redirect to {location} not followed" in result.error
    assert len(receiver.requests) == 1
    assert second_receiver.requests == []


@integration
def test_refused_destinations_are_never_contacted(receiver: Receiver) -> None:
    ftp = _send(receiver.url.replace("http://", "ftp://"))
    assert (ftp.ok, ftp.attempts) == (False, 0)
    assert "scheme 'ftp' is not allowed" in ftp.error
    plain = _send(receiver.url, policy=WebhookPolicy(timeout=5.0))  # loopback http not allowed here
    assert (plain.ok, plain.attempts) == (False, 0)
    assert "plain http to 127.0.0.1 refused" in plain.error
    assert receiver.requests == []


@integration
def test_a_slow_receiver_times_out_and_is_retried(receiver: Receiver) -> None:
    receiver.delay = 0.6
    result = _send(
        receiver.url,
        policy=WebhookPolicy(timeout=0.2, allow_http_loopback=True),
        retry=RetryPolicy(max_attempts=2, initial_delay=0.01),
    )
    assert (result.ok, result.attempts) == (False, 2)
    assert "timed out" in result.error


@integration
def test_an_unreachable_receiver_is_a_recorded_failure() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = _send(f"http://127.0.0.1:{port}/x", retry=RetryPolicy(max_attempts=2, initial_delay=0.01))
    assert (result.ok, result.attempts) == (False, 2)
    assert "ConnectionRefusedError" in result.error


@integration
def test_https_delivery_verifies_the_receivers_certificate(tmp_path: Path) -> None:
    cert, key = _self_signed_certificate(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    receiver = Receiver(tls=server_context).start()
    try:
        assert receiver.url.startswith("https://127.0.0.1:")
        trusted = _send(receiver.url, tls_context=ssl.create_default_context(cafile=str(cert)))
        assert (trusted.ok, trusted.attempts, trusted.status) == (True, 1, 200)
        [request] = receiver.requests
        assert verify_signature(request.body, SECRET, request.headers[SIGNATURE_HEADER])
        # Without the receiver's CA the handshake fails, and that is not retried.
        untrusted = _send(receiver.url)
        assert (untrusted.ok, untrusted.attempts) == (False, 1)
        assert "TLS certificate of 127.0.0.1 refused" in untrusted.error
        assert len(receiver.requests) == 1
    finally:
        receiver.stop()


# --------------------------------------------------------------------------- a real SMTP relay


class _Inbox:
    """aiosmtpd handler: stores messages; can refuse the first deliveries with a 4xx reply."""

    def __init__(self, refuse_first: int = 0) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.refuse_first = refuse_first

    async def handle_DATA(self, server, session, envelope) -> str:
        if self.refuse_first > 0:
            self.refuse_first -= 1
            return "451 4.3.0 try again later"
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def smtp_relay() -> Iterator[tuple[_Inbox, int]]:
    inbox = _Inbox()
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


def _self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "relay.pem", directory / "relay.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@integration
def test_email_is_delivered_through_the_relay(smtp_relay: tuple[_Inbox, int]) -> None:
    inbox, port = smtp_relay
    message = _message()
    result = send_email(
        SmtpConfig(host="127.0.0.1", port=port, sender="mms@example.com", timeout=5),
        ["ops@example.com", "ml@example.com"],
        message.subject(),
        email_text(message, studio_url="https://studio.example.com"),
        retry=FAST_RETRY,
    )
    assert (result.ok, result.attempts, result.error) == (True, 1, None)
    [(sender, recipients, content)] = inbox.messages
    assert sender == "mms@example.com"
    assert recipients == ["ops@example.com", "ml@example.com"]
    parsed = message_from_bytes(content, policy=email_policy.default)
    assert parsed["Subject"] == message.subject()
    assert parsed["To"] == "ops@example.com, ml@example.com"
    body = parsed.get_content()
    assert "What:         psi on income = 0.31 (> 0.2) for 3 consecutive windows" in body
    assert "https://studio.example.com/monitoring/alerts?alert=7" in body


@integration
def test_email_temporary_refusals_are_retried(smtp_relay: tuple[_Inbox, int]) -> None:
    inbox, port = smtp_relay
    inbox.refuse_first = 2
    result = send_email(
        SmtpConfig(host="127.0.0.1", port=port, timeout=5),
        ["ops@example.com"],
        "subject",
        "body",
        retry=FAST_RETRY,
    )
    assert (result.ok, result.attempts) == (True, 3)
    assert len(inbox.messages) == 1


@integration
def test_email_to_an_absent_relay_fails_cleanly() -> None:
    result = send_email(
        SmtpConfig(host="127.0.0.1", port=_free_port(), timeout=2),
        ["ops@example.com"],
        "subject",
        "body",
        retry=RetryPolicy(max_attempts=2, initial_delay=0.01),
    )
    assert (result.ok, result.attempts) == (False, 2)
    assert "ConnectionRefusedError" in result.error


@integration
def test_email_with_starttls_and_login(tmp_path: Path) -> None:
    cert, key = _self_signed_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    inbox = _Inbox()
    logins: list[tuple[bytes, bytes]] = []

    def authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        logins.append((auth_data.login, auth_data.password))
        # handled=False: let aiosmtpd answer a failure with 535 (its default waits silently).
        return AuthResult(success=auth_data.password == b"relay-password", handled=False)

    port = _free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        authenticator=authenticate,
        auth_require_tls=True,
    )
    controller.start()
    try:
        config = SmtpConfig(
            host="127.0.0.1",
            port=port,
            starttls=True,
            username="mms",
            password="relay-password",
            ca_file=str(cert),
            timeout=5,
        )
        ok = send_email(config, ["ops@example.com"], "over tls", "body", retry=FAST_RETRY)
        assert (ok.ok, ok.attempts) == (True, 1)
        assert logins == [(b"mms", b"relay-password")]
        assert len(inbox.messages) == 1

        def send_with(**changes: Any) -> DeliveryResult:
            """One message through the relay with ``config`` changed by ``changes``."""
            return send_email(replace(config, **changes), ["ops@example.com"], "x", "y", retry=FAST_RETRY)

        wrong = send_with(password="wrong-password")
        assert (wrong.ok, wrong.attempts) == (False, 1)
        assert "login refused (535)" in wrong.error

        # Credentials are never sent over a connection that did not upgrade to TLS.
        plain = send_with(starttls=False)
        assert (plain.ok, plain.attempts) == (False, 0)
        assert "without STARTTLS" in plain.error

        # A relay whose certificate is not trusted is refused, not retried.
        untrusted = send_with(ca_file=None)
        assert (untrusted.ok, untrusted.attempts) == (False, 1)
        assert "certificate" in untrusted.error
        assert len(inbox.messages) == 1
    finally:
        controller.stop()

"""Notifications: webhook (signed), retries with backoff, SMTP, MQTT, idempotency, masking, API."""

from __future__ import annotations

import json
import socketserver
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, delete, func, select
from typer.testing import CliRunner

from citybrain.app import create_app, prepare_node
from citybrain.cli import app as cli_app
from citybrain.core.config import Settings, load_settings
from citybrain.decisions.notify import channels, service
from citybrain.decisions.notify.models import SubscriptionCreate, notify_outbox
from citybrain.events import service as events
from citybrain.events.models import CaseCreate, CaseRead, TransitionRequest
from citybrain.governance.audit import service as audit
from citybrain.governance.principal import Principal, Role
from conftest import bearer, free_port

CENTRE = Principal(subject="op1", org="bureau", role=Role.operator, issuer="370000")
PHONE = "13812345678"
T0 = datetime(2025, 3, 3, 1, 0, tzinfo=UTC)  # a Monday, 09:00 in Beijing


# ---------------------------------------------------------------------------------------------
# local servers


class Webhook:
    """A local HTTP endpoint recording each POST; answers the queued statuses, then 200."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.statuses: list[int] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.received.append((dict(self.headers), body))
                status = hook.statuses.pop(0) if hook.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(b) for _, b in self.received]


class SmtpSink:
    """A tiny SMTP server (HELO/EHLO, MAIL, RCPT, DATA, QUIT) keeping each message."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        sink = self

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, line: str) -> None:
                self.wfile.write((line + "\r\n").encode())

            def handle(self) -> None:
                self.reply("220 sink ready")
                sender, rcpts = "", []
                while raw := self.rfile.readline():
                    cmd = raw.decode().strip()
                    verb = cmd[:4].upper()
                    if verb in {"HELO", "EHLO"}:
                        self.reply("250 sink")
                    elif verb == "MAIL":
                        sender = cmd.split(":", 1)[1].strip()
                        self.reply("250 ok")
                    elif verb == "RCPT":
                        rcpts.append(cmd.split(":", 1)[1].strip())
                        self.reply("250 ok")
                    elif verb == "DATA":
                        self.reply("354 end with .")
                        lines = []
                        while (line := self.rfile.readline()) not in (b".\r\n", b""):
                            lines.append(line)
                        sink.messages.append(
                            {"from": sender, "to": rcpts, "data": b"".join(lines).decode()}
                        )
                        self.reply("250 queued")
                    elif verb == "QUIT":
                        self.reply("221 bye")
                        return
                    else:
                        self.reply("250 ok")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.server.shutdown()


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    yield sink
    sink.server.shutdown()


@pytest.fixture
def node(tmp_path: Path) -> tuple[Settings, Engine]:
    settings = load_settings(data_dir=tmp_path, smtp_port=free_port())
    return settings, prepare_node(settings)


def _case(settings: Settings, engine: Engine, *, now: datetime = T0) -> CaseRead:
    """Report a street-lamp case with a caller phone, verify and file it."""
    case = events.report_case(
        engine=engine,
        data_dir=settings.data_dir,
        node_code=settings.code,
        principal=CENTRE,
        body=CaseCreate(
            event_type="street_lamp",
            description=f"路灯不亮，请回电 {PHONE} 或 0531-88886666",
            lon=117.0,
            lat=36.65,
            address=f"经十路 {PHONE}",
        ),
        source="hotline",
        contact_phone=PHONE,
        now=now,
    )
    for name in ("verify", "create_case"):
        _fire(settings, engine, case.id, name, now=now)
    return case


def _fire(
    settings: Settings,
    engine: Engine,
    case_id: str,
    name: str,
    *,
    now: datetime = T0,
    who: Principal = CENTRE,
    **kw: Any,
) -> CaseRead:
    return events.transition(
        engine=engine,
        data_dir=settings.data_dir,
        case_id=case_id,
        name=name,
        principal=who,
        body=TransitionRequest(**kw),
        now=now,
    )


def _subscribe(engine: Engine, settings: Settings, **fields: Any) -> str:
    body = SubscriptionCreate(**{"subscriber": "city_management", **fields})
    admin = Principal(subject="admin", org="bureau", role=Role.bureau_admin, issuer="370000")
    return service.create_subscription(
        engine=engine, data_dir=settings.data_dir, principal=admin, body=body
    ).id


def _outbox(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(notify_outbox)).scalar_one())


def _audit_actions(settings: Settings) -> list[dict[str, Any]]:
    lines = audit.log_path(settings.data_dir).read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["action"].startswith("notify.")]


# ---------------------------------------------------------------------------------------------
# channels


def test_webhook_delivery_is_signed_masked_and_audited(
    node: tuple[Settings, Engine], webhook: Webhook
) -> None:
    settings, engine = node
    secret = "s3cret-key-123"
    _subscribe(engine, settings, channel="webhook", target=webhook.url, secret=secret)
    case = _case(settings, engine)
    assert _outbox(engine) == 0  # verify and create_case are no happenings
    _fire(settings, engine, case.id, "dispatch")
    report = service.deliver_once(engine=engine, settings=settings, now=T0)
    assert report.sent == 1
    headers, body = webhook.received[0]
    assert headers[channels.SIGNATURE_HEADER] == channels.signature(secret, body)
    payload = json.loads(body)
    assert payload["happening"] == "dispatch" and payload["case_id"] == case.id
    assert payload["department"] == "city_management"
    assert payload["contact_phone"] == "138****5678"
    assert PHONE not in body.decode() and "88886666" not in body.decode()
    assert "138****5678" in payload["description"] and "138****5678" in payload["address"]
    delivered = [r for r in _audit_actions(settings) if r["action"] == "notify.deliver"]
    assert delivered and delivered[-1]["result"] == "ok"
    assert PHONE not in audit.log_path(settings.data_dir).read_text(encoding="utf-8")


def test_failing_endpoint_is_retried_with_exponential_backoff(
    node: tuple[Settings, Engine], webhook: Webhook
) -> None:
    settings, engine = node
    webhook.statuses = [500, 503, 502]
    _subscribe(engine, settings, channel="webhook", target=webhook.url)
    case = _case(settings, engine)
    _fire(settings, engine, case.id, "dispatch")
    t = T0
    assert service.deliver_once(engine=engine, settings=settings, now=t).retried == 1
    # next attempt after 2 s: not due at +1 s
    assert service.deliver_once(
        engine=engine, settings=settings, now=t + timedelta(seconds=1)
    ).model_dump() == {"sent": 0, "retried": 0, "failed": 0}
    t += timedelta(seconds=2)
    assert service.deliver_once(engine=engine, settings=settings, now=t).retried == 1
    # then 4 s
    assert (
        service.deliver_once(engine=engine, settings=settings, now=t + timedelta(seconds=3)).retried
        == 0
    )
    t += timedelta(seconds=4)
    assert service.deliver_once(engine=engine, settings=settings, now=t).retried == 1
    t += timedelta(seconds=8)
    assert service.deliver_once(engine=engine, settings=settings, now=t).sent == 1
    assert len(webhook.received) == 4
    (d,) = service.list_deliveries(
        engine=engine, principal=Principal("a", "bureau", Role.bureau_admin, "370000")
    )
    assert d.state == "sent" and d.attempts == 4
    failures = [r for r in _audit_actions(settings) if r["result"] == "error"]
    assert len(failures) == 3 and "500" in failures[0]["detail"]["error"]
    assert [service.backoff(n).total_seconds() for n in (1, 2, 3, 20)] == [2, 4, 8, 900]


def test_unreachable_endpoint_gives_up_after_max_attempts(node: tuple[Settings, Engine]) -> None:
    settings, engine = node
    _subscribe(engine, settings, channel="webhook", target=f"http://127.0.0.1:{free_port()}/x")
    case = _case(settings, engine)
    _fire(settings, engine, case.id, "dispatch")
    t = T0
    for _ in range(service.MAX_ATTEMPTS):
        service.deliver_once(engine=engine, settings=settings, now=t)
        t += timedelta(hours=1)
    admin = Principal("a", "bureau", Role.bureau_admin, "370000")
    (d,) = service.list_deliveries(engine=engine, principal=admin)
    assert d.state == "failed" and d.attempts == service.MAX_ATTEMPTS and d.last_error


def test_email_delivery_through_a_local_smtp_server(tmp_path: Path, smtp: SmtpSink) -> None:
    settings = load_settings(data_dir=tmp_path, smtp_port=smtp.port, smtp_from="brain@jinan.gov")
    engine = prepare_node(settings)
    _subscribe(engine, settings, channel="email", target="lamps@jinan.gov", happenings=["urge"])
    case = _case(settings, engine)
    _fire(settings, engine, case.id, "dispatch")
    assert _outbox(engine) == 0  # subscribed to urge only
    _fire(settings, engine, case.id, "urge", note="hurry")
    assert service.deliver_once(engine=engine, settings=settings, now=T0).sent == 1
    (message,) = smtp.messages
    assert message["from"] == "<brain@jinan.gov>" and message["to"] == ["<lamps@jinan.gov>"]
    assert "Subject: [CityBrain] urge:" in message["data"] and case.id in message["data"]
    assert PHONE not in message["data"]


def test_email_to_a_dead_smtp_server_is_retried(node: tuple[Settings, Engine]) -> None:
    settings, engine = node  # smtp_port is a free port: nothing listens
    _subscribe(engine, settings, channel="email", target="lamps@jinan.gov")
    case = _case(settings, engine)
    _fire(settings, engine, case.id, "dispatch")
    report = service.deliver_once(engine=engine, settings=settings, now=T0)
    assert report.retried == 1 and report.sent == 0


def test_mqtt_delivery_through_mosquitto(
    node: tuple[Settings, Engine], mqtt_broker: tuple[str, int]
) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    settings, engine = node
    host, port = mqtt_broker
    topic = f"citybrain/{settings.code}/notify/city_management"
    got: list[dict[str, Any]] = []
    ready = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_subscribe = lambda *a: ready.set()
    client.on_message = lambda c, u, m: got.append(json.loads(m.payload))
    client.connect(host, port)
    client.subscribe(topic, qos=1)
    client.loop_start()
    try:
        assert ready.wait(5)
        _subscribe(engine, settings, channel="mqtt", target=f"mqtt://{host}:{port}")
        case = _case(settings, engine)
        _fire(settings, engine, case.id, "dispatch")
        assert service.deliver_once(engine=engine, settings=settings, now=T0).sent == 1
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        client.loop_stop()
        client.disconnect()
    assert got and got[0]["case_id"] == case.id and got[0]["contact_phone"] == "138****5678"


# ---------------------------------------------------------------------------------------------
# the hook


def test_the_same_transition_is_notified_once(
    node: tuple[Settings, Engine], webhook: Webhook
) -> None:
    settings, engine = node
    _subscribe(engine, settings, channel="webhook", target=webhook.url)
    case = _case(settings, engine)
    dispatched = _fire(settings, engine, case.id, "dispatch")
    assert _outbox(engine) == 1
    # the hook runs again for the same transition (a retry, a replay): nothing new
    for _ in range(3):
        assert (
            service.notify_transition(engine=engine, case=dispatched, transition_name="dispatch")
            == 0
        )
    service.deliver_once(engine=engine, settings=settings, now=T0)
    service.deliver_once(engine=engine, settings=settings, now=T0 + timedelta(hours=1))
    assert len(webhook.received) == 1
    # a second urge is a new transition: notified again
    _fire(settings, engine, case.id, "urge")
    _fire(settings, engine, case.id, "urge")
    assert _outbox(engine) == 3


def test_overdue_escalation_and_closure_are_notified(node: tuple[Settings, Engine]) -> None:
    settings, engine = node
    _subscribe(engine, settings, channel="webhook", target="http://127.0.0.1:9/x")
    _subscribe(
        engine,
        settings,
        subscriber="bureau",
        channel="webhook",
        target="http://127.0.0.1:9/y",
        happenings=["closure"],
    )
    case = _case(settings, engine)
    _fire(settings, engine, case.id, "dispatch")
    later = T0 + timedelta(days=30)
    assert events.escalate_overdue(engine=engine, data_dir=settings.data_dir, now=later)
    assert events.escalate_overdue(engine=engine, data_dir=settings.data_dir, now=later) == []
    admin = Principal("a", "bureau", Role.bureau_admin, "370000")
    happenings = sorted(
        d.happening for d in service.list_deliveries(engine=engine, principal=admin)
    )
    assert happenings == ["dispatch", "escalation", "overdue"]
    dept = Principal(subject="h1", org="city_management", role=Role.operator, issuer="370000")
    _fire(settings, engine, case.id, "handle", now=later, who=dept)
    _fire(settings, engine, case.id, "feedback", now=later, who=dept, note="fixed")
    _fire(settings, engine, case.id, "accept_result", now=later)
    _fire(settings, engine, case.id, "close", now=later)
    closures = [
        d
        for d in service.list_deliveries(engine=engine, principal=admin)
        if d.happening == "closure"
    ]
    assert len(closures) == 2  # the department's and the bureau's


def test_person_subscription_follows_their_own_reports(node: tuple[Settings, Engine]) -> None:
    settings, engine = node
    me = Principal(subject="op1", org="bureau", role=Role.operator, issuer="370000")
    service.create_subscription(
        engine=engine,
        data_dir=settings.data_dir,
        principal=me,
        body=SubscriptionCreate(
            subscriber_kind="person",
            subscriber="op1",
            channel="webhook",
            target="http://127.0.0.1:9/me",
        ),
    )
    case = _case(settings, engine)
    _fire(settings, engine, case.id, "dispatch")
    assert _outbox(engine) == 1


# ---------------------------------------------------------------------------------------------
# API and CLI


def test_subscription_api_crud_and_refusals(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    admin = bearer(tmp_path)
    steward = bearer(tmp_path, org="housing", role="steward", subject="s1")
    citizen = bearer(tmp_path, org="citizens", role="citizen", subject="citizen:139")
    hook = {"subscriber": "housing", "channel": "webhook", "target": "http://127.0.0.1:9/h"}
    with TestClient(create_app(settings), headers=admin) as client:
        made = client.post("/api/notify/subscriptions", json=hook, headers=steward)
        assert made.status_code == 201, made.text
        sub = made.json()
        assert sub["signed"] is False and sub["happenings"] == sorted(
            ["dispatch", "urge", "overdue", "closure", "escalation"]
        )
        assert "secret" not in sub
        other = {**hook, "subscriber": "education"}
        assert (
            client.post("/api/notify/subscriptions", json=other, headers=steward).status_code == 403
        )
        assert (
            client.post(
                "/api/notify/subscriptions", json={**hook, "subscriber": "nobody"}
            ).status_code
            == 400
        )
        assert (
            client.post("/api/notify/subscriptions", json={**hook, "target": "ftp://x"}).status_code
            == 400
        )
        mail = {**hook, "channel": "email", "target": "not-an-address"}
        assert client.post("/api/notify/subscriptions", json=mail).status_code == 400
        mqtt_bad = {**hook, "channel": "mqtt", "target": "mqtt://h:1883/a/#"}
        assert client.post("/api/notify/subscriptions", json=mqtt_bad).status_code == 400
        signed_mail = {**hook, "channel": "email", "target": "a@b.cn", "secret": "12345678"}
        assert client.post("/api/notify/subscriptions", json=signed_mail).status_code == 400
        assert (
            client.post("/api/notify/subscriptions", json={**hook, "channel": "fax"}).status_code
            == 400
        )
        assert (
            client.post("/api/notify/subscriptions", json={**hook, "happenings": ["x"]}).status_code
            == 400
        )
        path = f"/api/notify/subscriptions/{sub['id']}"
        assert client.get(path, headers=steward).json()["id"] == sub["id"]
        assert (
            client.get(path, headers=bearer(tmp_path, org="education", role="steward")).status_code
            == 404
        )
        changed = client.patch(path, json={"happenings": ["urge"], "active": False})
        assert changed.json()["happenings"] == ["urge"] and changed.json()["active"] is False
        assert client.patch(path, json={}).status_code == 400
        assert [
            s["id"] for s in client.get("/api/notify/subscriptions", headers=steward).json()
        ] == [sub["id"]]
        assert client.get("/api/notify/subscriptions", headers=citizen).json() == []
        assert client.get("/api/notify/deliveries").json() == []
        assert client.get("/api/notify/deliveries", headers=steward).json() == []
        assert client.get("/api/notify/deliveries", headers=citizen).status_code == 403
        assert client.get("/api/notify/deliveries?state=lost").status_code == 400
        assert client.delete(path, headers=steward).status_code == 204
        assert client.get(path).status_code == 404
        assert client.delete(path).status_code == 404
        assert (
            client.get("/api/notify/subscriptions", headers={"Authorization": ""}).status_code
            == 401
        )


def test_cli_lists_and_drains(node: tuple[Settings, Engine], webhook: Webhook) -> None:
    settings, engine = node
    _subscribe(engine, settings, channel="webhook", target=webhook.url)
    case = _case(settings, engine, now=datetime.now(UTC))
    _fire(settings, engine, case.id, "dispatch", now=datetime.now(UTC))
    runner = CliRunner(env={"COLUMNS": "250"})
    data = str(settings.data_dir)
    out = runner.invoke(cli_app, ["notify", "subscriptions", "--data", data])
    assert out.exit_code == 0 and "city_management" in out.output
    out = runner.invoke(cli_app, ["notify", "drain", "--data", data])
    assert out.exit_code == 0 and "sent 1" in out.output, out.output
    out = runner.invoke(cli_app, ["notify", "deliveries", "--data", data, "--state", "sent"])
    assert out.exit_code == 0 and case.id[:10] in out.output
    assert len(webhook.received) == 1


def test_postgres_outbox_is_idempotent(tmp_path: Path, postgres_url: str) -> None:
    # the session database belongs to node 370100 (see the other PostgreSQL tests)
    settings = load_settings(
        data_dir=tmp_path, database_url=postgres_url, code="370100", level="city"
    )
    engine = prepare_node(settings)
    sub = None
    try:
        sub = _subscribe(engine, settings, channel="webhook", target="http://127.0.0.1:9/pg")
        case = _case(settings, engine)
        dispatched = _fire(settings, engine, case.id, "dispatch")
        again = service.notify_transition(
            engine=engine, case=dispatched, transition_name="dispatch"
        )
        assert again == 0
        with engine.connect() as conn:
            keys = (
                conn.execute(
                    select(notify_outbox.c.idempotency_key).where(
                        notify_outbox.c.subscription_id == sub
                    )
                )
                .scalars()
                .all()
            )
        assert len(keys) == 1 and keys[0].startswith(f"{case.id}:")
    finally:
        # the session database is shared: leave no deliveries for other nodes' loops to try
        if sub is not None:
            with engine.begin() as conn:
                conn.execute(delete(notify_outbox).where(notify_outbox.c.subscription_id == sub))
        engine.dispose()

"""NGSI-LD subscriptions: HTTP and MQTT notifications, filters, and delivery across a restart."""

from __future__ import annotations

import http.server
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient

from citybrain.app import create_app
from citybrain.core.config import load_settings
from conftest import free_port

B = "/ngsi-ld/v1"
AQ = "urn:ngsi-ld:AirQualityObserved:"


class Receiver:
    """A local HTTP endpoint that records the notifications it gets."""

    def __init__(self, port: int | None = None) -> None:
        self.received: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []  # of each notification, in the same order
        received, headers = self.received, self.headers
        lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                size = int(self.headers["content-length"])
                body = json.loads(self.rfile.read(size))
                with lock:  # the two lists stay in step
                    headers.append(dict(self.headers))
                    received.append(body)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port or 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = load_settings(data_dir=tmp_path, anonymous_role="bureau_admin")
    with TestClient(create_app(settings)) as c:
        yield c


def subscribe(client: TestClient, uri: str, **extra: Any) -> str:
    body = {
        "type": "Subscription",
        "entities": [{"type": "AirQualityObserved"}],
        "notification": {"endpoint": {"uri": uri}, "format": "keyValues"},
        **extra,
    }
    response = client.post(f"{B}/subscriptions", json=body)
    assert response.status_code == 201, response.text
    return response.headers["location"].rsplit("/", 1)[-1]


def put(client: TestClient, n: int, pm25: float, **attrs: Any) -> None:
    entity = {
        "id": f"{AQ}{n}",
        "type": "AirQualityObserved",
        "pm25": {"type": "Property", "value": pm25},
        **attrs,
    }
    assert client.post(f"{B}/entityOperations/upsert", json=[entity]).status_code in (201, 204)


def test_http_notification_with_filters(client: TestClient, receiver: Receiver) -> None:
    subscribe(
        client,
        f"http://127.0.0.1:{receiver.port}/n",
        watchedAttributes=["pm25"],
        q="pm25>50",
        notification={
            "endpoint": {"uri": f"http://127.0.0.1:{receiver.port}/n"},
            "format": "keyValues",
            "attributes": ["pm25"],
        },
    )
    put(client, 1, 30)  # q does not match
    put(client, 2, 80, no2={"type": "Property", "value": 5})
    client.patch(
        f"{B}/entities/{AQ}2/attrs", json={"no2": {"type": "Property", "value": 6}}
    )  # not watched
    wait_for(lambda: len(receiver.received) >= 1)
    time.sleep(0.5)
    assert len(receiver.received) == 1
    note = receiver.received[0]
    assert note["type"] == "Notification" and note["data"] == [
        {"id": f"{AQ}2", "type": "AirQualityObserved", "pm25": 80}
    ]


def test_every_change_is_notified_once_at_least(client: TestClient, receiver: Receiver) -> None:
    subscribe(client, f"http://127.0.0.1:{receiver.port}/n")
    for i in range(20):
        put(client, 1, i)
    wait_for(lambda: len(receiver.received) >= 20)
    values = [n["data"][0]["pm25"] for n in receiver.received]
    assert sorted(set(values)) == list(range(20))
    status = client.get(f"{B}/subscriptions").json()[0]["notification"]
    assert status["timesSent"] >= 20 and status["status"] == "ok"


def test_throttling_and_paused_and_expired(client: TestClient, receiver: Receiver) -> None:
    sid = subscribe(client, f"http://127.0.0.1:{receiver.port}/n", throttling=60)
    put(client, 1, 1)
    put(client, 1, 2)
    wait_for(lambda: len(receiver.received) >= 1)
    time.sleep(0.4)
    assert len(receiver.received) == 1  # the second change fell inside the throttling window
    assert client.patch(f"{B}/subscriptions/{sid}", json={"isActive": False}).status_code == 204
    assert client.get(f"{B}/subscriptions/{sid}").json()["status"] == "paused"
    assert client.delete(f"{B}/subscriptions/{sid}").status_code == 204
    assert client.get(f"{B}/subscriptions/{sid}").status_code == 404


def test_notifications_survive_a_restart(tmp_path: Path) -> None:
    port = free_port()
    settings = load_settings(data_dir=tmp_path, anonymous_role="bureau_admin")
    with TestClient(create_app(settings)) as c:
        subscribe(c, f"http://127.0.0.1:{port}/n")
        put(c, 1, 42)  # the receiver is down: the notification waits in the outbox
        time.sleep(0.5)
        status = c.get(f"{B}/subscriptions").json()[0]["notification"]
        assert status["timesFailed"] >= 1
    receiver = Receiver(port)
    try:
        with TestClient(create_app(settings)):
            wait_for(lambda: len(receiver.received) >= 1, timeout=20)
        assert receiver.received[0]["data"][0]["pm25"] == 42
    finally:
        receiver.close()


def test_mqtt_notification(client: TestClient, mqtt_broker: tuple[str, int]) -> None:
    host, port = mqtt_broker
    topic = f"citybrain/test/{uuid.uuid4().hex}"
    messages: list[dict[str, Any]] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.on_message = lambda _c, _u, msg: messages.append(json.loads(msg.payload))
    sub.connect(host, port)
    sub.subscribe(topic, qos=1)
    sub.loop_start()
    try:
        time.sleep(0.3)
        subscribe(client, f"mqtt://{host}:{port}/{topic}")
        put(client, 7, 77)
        wait_for(lambda: len(messages) >= 1)
        body = messages[0]["body"]
        assert body["data"][0]["pm25"] == 77 and "Link" in messages[0]["metadata"]
    finally:
        sub.loop_stop()
        sub.disconnect()


def _sub(notification: dict[str, Any] | None = None, **members: Any) -> dict[str, Any]:
    """A subscription to type T notifying http://x/y, with the members given."""
    endpoint = {"endpoint": {"uri": "http://x/y"}}
    return {"type": "Subscription", "entities": [{"type": "T"}]} | {
        "notification": endpoint | (notification or {}),
        **members,
    }


@pytest.mark.parametrize(
    "body",
    [
        {"type": "Subscription", "entities": [{"type": "T"}]},
        _sub({"endpoint": {"uri": "ftp://x/y"}}),
        {"type": "Subscription", "notification": {"endpoint": {"uri": "http://x/y"}}},
        _sub(type="Sub"),
        _sub(q="a>>"),
        _sub(throttling=-1),
        _sub(throttling=5, timeInterval=5),
        _sub(expiresAt="2000-01-01T00:00:00Z"),
        _sub(geoQ={"georel": "near;maxDistance==x", "geometry": "Point", "coordinates": [1, 2]}),
        _sub({"format": "xml"}),
        *(
            _sub(notification)
            for notification in (
                {"pick": ["id"], "omit": ["id"]},
                {"pick": ["name"], "attributes": ["name"]},
                {"omit": ["name"], "attributes": ["name"]},
                {"attributes": []},
                {"pick": []},
                {"omit": []},
                {"format": "keyValues", "showChanges": True},
                {"join": "sideways"},
                {"join": "inline", "joinLevel": 0},
                {"join": "flat", "joinLevel": "two"},
            )
        ),
        _sub({"endpoint": {"uri": "http://x/y", "notifierInfo": [{"key": "k", "value": {}}]}}),
        _sub(jsonldContext="unknownContext"),
        _sub(csf="(("),
    ],
)
def test_bad_subscriptions(client: TestClient, body: dict[str, Any]) -> None:
    response = client.post(f"{B}/subscriptions", json=body)
    assert response.status_code == 400, response.text
    assert client.get(f"{B}/subscriptions").json() == []


def test_duplicate_subscription_id(client: TestClient) -> None:
    body = {
        "id": "urn:ngsi-ld:Subscription:s1",
        "type": "Subscription",
        "entities": [{"type": "T"}],
        "notification": {"endpoint": {"uri": "http://127.0.0.1:9/n"}},
    }
    assert client.post(f"{B}/subscriptions", json=body).status_code == 201
    assert client.post(f"{B}/subscriptions", json=body).status_code == 409


def test_a_receiver_that_does_not_answer_does_not_hold_up_the_others(
    client: TestClient, receiver: Receiver
) -> None:
    # a listener that never accepts: each notification to it waits for the delivery timeout
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    try:
        subscribe(client, f"http://127.0.0.1:{silent.getsockname()[1]}/n")
        subscribe(client, f"http://127.0.0.1:{receiver.port}/n")
        start = time.monotonic()
        for i in range(10):
            put(client, 1, i)
        # one 5 s timeout, then the silent endpoint is left alone while the other is served
        wait_for(lambda: len(receiver.received) >= 10, timeout=20)
        assert time.monotonic() - start < 15
        listed = {
            s["notification"]["endpoint"]["uri"]: s for s in client.get(f"{B}/subscriptions").json()
        }
        silent_sub = listed[f"http://127.0.0.1:{silent.getsockname()[1]}/n"]
        assert silent_sub["notification"]["status"] == "failed"
        # a new subscription to the endpoint left alone is put off, and shows the failure
        late = subscribe(client, silent_sub["notification"]["endpoint"]["uri"])
        put(client, 1, 99)
        wait_for(lambda: len(receiver.received) >= 11, timeout=20)

        def status() -> str:
            # no status until the first notification was tried (or put off)
            notification = client.get(f"{B}/subscriptions/{late}").json()["notification"]
            return str(notification.get("status"))

        wait_for(lambda: status() == "failed", timeout=10)
    finally:
        silent.close()


def test_the_breaker_pauses_a_failing_endpoint_longer_each_time() -> None:
    from citybrain.hub.ngsild.notifier import EndpointBreaker

    breaker = EndpointBreaker()
    assert breaker.down_until("http://a/n") is None
    breaker.failed("http://a/n")
    first = breaker.down_until("http://a/n")
    assert first is not None and 0.9 < first - time.monotonic() <= 1.0
    breaker.failed("http://a/n")
    second = breaker.down_until("http://a/n")
    assert second is not None and 1.9 < second - time.monotonic() <= 2.0
    assert breaker.down_until("http://b/n") is None
    breaker.worked("http://a/n")
    assert breaker.down_until("http://a/n") is None


def test_pick_and_omit_shape_the_notified_entities(client: TestClient, receiver: Receiver) -> None:
    uri = f"http://127.0.0.1:{receiver.port}/n"
    for member, names in (("pick", ["id", "pm25"]), ("omit", ["no2"])):
        subscribe(
            client,
            uri,
            notification={"endpoint": {"uri": uri}, "format": "keyValues", member: names},
        )
    put(client, 1, 40, no2={"type": "Property", "value": 7})
    wait_for(lambda: len(receiver.received) >= 2)
    shapes = sorted(sorted(n["data"][0]) for n in receiver.received)
    assert shapes == [["id", "pm25"], ["id", "pm25", "type"]]


def test_join_sends_the_linked_entities_with_the_notification(
    client: TestClient, receiver: Receiver
) -> None:
    """Clause 4.5.23 in notifications: notification.join inline or flat, whole linked entities."""
    uri = f"http://127.0.0.1:{receiver.port}/n"
    device = {
        "id": "urn:ngsi-ld:Device:1",
        "type": "Device",
        "name": {"type": "Property", "value": "d1"},
    }
    assert client.post(f"{B}/entities", json=device).status_code == 201
    for join in ("inline", "flat"):
        notification = {
            "endpoint": {"uri": uri},
            "format": "keyValues",
            "join": join,
            "joinLevel": 1,
            "attributes": ["refDevice"],
        }
        sub_id = subscribe(client, uri, notification=notification)
        shown = client.get(f"{B}/subscriptions/{sub_id}").json()["notification"]
        assert (shown["join"], shown["joinLevel"]) == (join, 1)
    put(client, 1, 40, refDevice={"type": "Relationship", "object": "urn:ngsi-ld:Device:1"})
    wait_for(lambda: len(receiver.received) >= 2)
    by_size = sorted(receiver.received, key=lambda n: len(n["data"]))
    inline, flat = by_size[0]["data"], by_size[1]["data"]
    assert inline[0]["refDevice"] == {
        "id": "urn:ngsi-ld:Device:1",
        "type": "Device",
        "name": "d1",
    }
    assert [e["id"] for e in flat] == [f"{AQ}1", "urn:ngsi-ld:Device:1"]
    assert flat[0]["refDevice"] == "urn:ngsi-ld:Device:1" and flat[1]["name"] == "d1"


def test_what_the_system_adds_appears_once_there_is_something_to_tell(
    client: TestClient, receiver: Receiver
) -> None:
    """Clause 5.2.12/5.2.14: no counts or notification status before a notification."""
    periodic = subscribe(
        client, f"http://127.0.0.1:{receiver.port}/n", timeInterval=5, isActive=False
    )
    paused = client.get(f"{B}/subscriptions/{periodic}").json()
    assert paused["timeInterval"] == 5 and isinstance(paused["timeInterval"], int)
    assert paused["status"] == "paused" and paused["isActive"] is False
    sub_id = subscribe(
        client, f"http://127.0.0.1:{receiver.port}/n", entities=[{"type": "Nothing"}]
    )
    fresh = client.get(f"{B}/subscriptions/{sub_id}").json()
    assert fresh["status"] == "active" and "isActive" not in fresh
    assert not {"timesSent", "timesFailed", "status"} & set(fresh["notification"])
    sub_id = subscribe(client, f"http://127.0.0.1:{receiver.port}/n")
    put(client, 1, 40)
    wait_for(
        lambda: "timesSent" in client.get(f"{B}/subscriptions/{sub_id}").json()["notification"]
    )
    told = client.get(f"{B}/subscriptions/{sub_id}").json()["notification"]
    assert told["status"] == "ok" and told["timesSent"] >= 1 and "timesFailed" not in told


def test_show_changes_carries_what_an_update_or_a_deletion_replaced(
    client: TestClient, receiver: Receiver
) -> None:
    """showChanges: previousValue, previousObject, previousVocab... on update and deletion."""
    uri = f"http://127.0.0.1:{receiver.port}/n"
    for triggers in (["attributeUpdated"], ["entityDeleted"]):
        body = {
            "type": "Subscription",
            "entities": [{"type": "Building"}],
            "notificationTrigger": triggers,
            "notification": {"endpoint": {"uri": uri}, "showChanges": True},
        }
        assert client.post(f"{B}/subscriptions", json=body).status_code == 201
    building = {
        "id": "urn:ngsi-ld:Building:s1",
        "type": "Building",
        "name": {"type": "Property", "value": "Old"},
        "kind": {"type": "VocabProperty", "vocab": "monument"},
        "owner": {"type": "Relationship", "object": "urn:ngsi-ld:Person:a"},
    }
    assert client.post(f"{B}/entities", json=building).status_code == 201
    change = {
        "name": {"type": "Property", "value": "New"},
        "owner": {"type": "Relationship", "object": "urn:ngsi-ld:Person:b"},
    }
    assert client.patch(f"{B}/entities/{building['id']}/attrs", json=change).status_code == 204
    wait_for(lambda: len(receiver.received) >= 1)
    updated = receiver.received[0]["data"][0]
    assert (updated["name"]["value"], updated["name"]["previousValue"]) == ("New", "Old")
    assert updated["owner"]["previousObject"] == "urn:ngsi-ld:Person:a"
    assert "previousVocab" not in updated["kind"]  # not changed by this update
    assert client.delete(f"{B}/entities/{building['id']}").status_code == 204
    wait_for(lambda: len(receiver.received) >= 2)
    gone = receiver.received[1]["data"][0]
    assert gone["name"] == {"type": "Property", "value": "urn:ngsi-ld:null", "previousValue": "New"}
    assert gone["kind"]["previousVocab"] == "monument"  # compacted as vocab is
    assert "deletedAt" in gone


def test_notification_sys_attrs_and_json_ld_delivery(
    client: TestClient, receiver: Receiver
) -> None:
    """notification.sysAttrs adds createdAt/modifiedAt; a JSON-LD receiver gets the @context
    in the body and no Link header; a JSON one a Link to the subscription's context."""
    uri = f"http://127.0.0.1:{receiver.port}/n"
    for accept in ("application/json", "application/ld+json"):
        notification = {"endpoint": {"uri": uri, "accept": accept}, "sysAttrs": True}
        subscribe(client, uri, notification=notification)
    put(client, 1, 40)
    wait_for(lambda: len(receiver.received) >= 2)
    by_type = {
        h["Content-Type"]: (b, h) for b, h in zip(receiver.received, receiver.headers, strict=False)
    }
    plain, plain_headers = by_type["application/json"]
    assert "createdAt" in plain["data"][0] and "json-ld#context" in plain_headers["Link"]
    ld, ld_headers = by_type["application/ld+json"]
    assert "Link" not in ld_headers and "@context" in ld
    r = client.post(
        f"{B}/subscriptions",
        json={
            "type": "Subscription",
            "entities": [{"type": "T"}],
            "notification": {"endpoint": {"uri": uri}, "sysAttrs": "yes"},
        },
    )
    assert r.status_code == 400

"""Open311 GeoReport v2 round trip with an HTTP client."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from citybrain.app import create_app
from citybrain.core.config import load_settings
from conftest import bearer


def test_open311_round_trip(tmp_path: Path) -> None:
    app = create_app(load_settings(data_dir=tmp_path, code="370100", level="city"))
    citizen = bearer(
        tmp_path,
        org="citizens",
        role="citizen",
        issuer="370100",
        subject="citizen:13700001234",
        phone="13700001234",
    )
    with TestClient(app) as client:
        # services are public: no token
        services = client.get("/open311/v2/services.json")
        assert services.status_code == 200
        codes = {s["service_code"]: s for s in services.json()}
        assert codes["street_lamp"]["service_name"] == "路灯" and codes["street_lamp"]["metadata"]
        assert client.get("/open311/v2/services").json() == services.json()
        attrs = client.get("/open311/v2/services/street_lamp.json").json()
        assert attrs["attributes"][0]["code"] == "urgency"
        missing = client.get("/open311/v2/services/nope.json")
        assert missing.status_code == 404 and missing.json()[0]["code"] == 404
        # a request without a token is refused
        assert client.post("/open311/v2/requests.json", data={}).status_code == 401
        form = {
            "service_code": "street_lamp",
            "lat": "36.67",
            "long": "117.05",
            "address_string": "历下区泉城路",
            "description": "路灯不亮好几天了",
            "phone": "13700001234",
            "attribute[urgency]": "urgent",
            "api_key": "ignored",
        }
        created = client.post("/open311/v2/requests.json", data=form, headers=citizen)
        assert created.status_code == 200, created.text
        [answer] = created.json()
        request_id = answer["service_request_id"]
        assert "city_management" in answer["service_notice"] and "account_id" in answer
        [one] = client.get(f"/open311/v2/requests/{request_id}.json", headers=citizen).json()
        assert (one["status"], one["service_code"], one["lat"], one["long"]) == (
            "open",
            "street_lamp",
            36.67,
            117.05,
        )
        assert one["agency_responsible"] == "city_management" and one["expected_datetime"] is None
        assert "13700001234" not in str(one)
        listed = client.get(
            "/open311/v2/requests.json", params={"status": "open"}, headers=citizen
        ).json()
        assert [r["service_request_id"] for r in listed] == [request_id]
        # the centre closes the case: Open311 reports it closed with the last note
        centre = bearer(tmp_path, org="bureau", role="operator", issuer="370100")
        dept = bearer(tmp_path, org="city_management", role="operator", issuer="370100")
        steps = [
            ("verify", centre, {}),
            ("create_case", centre, {}),
            ("dispatch", centre, {}),
            ("handle", dept, {}),
            ("feedback", dept, {"note": "已更换灯泡"}),
            ("accept_result", centre, {}),
            ("close", centre, {}),
        ]
        for name, headers, body in steps:
            moved = client.post(
                f"/api/events/cases/{request_id}/transitions/{name}",
                json=body or None,
                headers=headers,
            )
            assert moved.status_code == 200, moved.text
        [done] = client.get(f"/open311/v2/requests/{request_id}.json", headers=citizen).json()
        assert done["status"] == "closed" and done["status_notes"] == "已更换灯泡"
        assert done["expected_datetime"] is not None
        assert (
            client.get(
                "/open311/v2/requests.json", params={"status": "open"}, headers=citizen
            ).json()
            == []
        )
        # JSON bodies work too
        by_json = client.post(
            "/open311/v2/requests",
            json={
                "service_code": "illegal_parking",
                "address_string": "市中区经四路",
                "description": "车停在消防通道上",
            },
            headers=citizen,
        )
        assert by_json.status_code == 200
        [parked] = client.get(
            f"/open311/v2/requests/{by_json.json()[0]['service_request_id']}.json", headers=citizen
        ).json()
        assert parked["lat"] is None and parked["agency_responsible"] == "public_security"


def test_open311_errors_are_in_the_open311_format(tmp_path: Path) -> None:
    app = create_app(load_settings(data_dir=tmp_path, code="370100", level="city"))
    headers = bearer(tmp_path, org="bureau", role="operator", issuer="370100")
    with TestClient(app, headers=headers) as client:
        cases = [
            ({"lat": "36.67", "long": "117.05", "description": "x"}, 400, "service_code"),
            (
                {"service_code": "ufo", "lat": "36.67", "long": "117.05", "description": "x"},
                422,
                "unknown event type",
            ),
            (
                {
                    "service_code": "street_lamp",
                    "lat": "36.07",
                    "long": "120.38",
                    "description": "路灯不亮",
                },
                422,
                "outside",
            ),
            (
                {"service_code": "street_lamp", "lat": "abc", "long": "117", "description": "x"},
                400,
                "number",
            ),
            (
                {
                    "service_code": "street_lamp",
                    "lat": "36.67",
                    "long": "117.05",
                    "description": "   ",
                },
                400,
                "empty",
            ),
            ({"service_code": "street_lamp", "description": "路灯"}, 400, "address_string"),
        ]
        for form, status, words in cases:
            response = client.post("/open311/v2/requests.json", data=form)
            assert response.status_code == status, (form, response.text)
            [error] = response.json()
            assert error["code"] == status and words in error["description"]
        missing = client.get("/open311/v2/requests/EVNOPE.json")
        assert missing.status_code == 404 and missing.json()[0]["code"] == 404
        assert client.get("/open311/v2/requests.json?status=maybe").status_code == 400
        assert client.get("/open311/v2/requests.json?start_date=xx").json()[0]["code"] == 400
        wrong = client.post(
            "/open311/v2/requests.json", content=b"<xml/>", headers={"content-type": "text/xml"}
        )
        assert wrong.status_code == 400
        assert client.get("/open311/v2/requests.json").json() == []

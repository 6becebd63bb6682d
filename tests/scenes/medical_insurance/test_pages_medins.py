"""The phone and terminal pages, served by the node without a CDN, and the dashboard panel."""

from __future__ import annotations

import re

from test_voucher_node import (  # noqa: F401 - fixtures
    City,
    city_fixture,
    prepared_root_fixture,
    synth_root_fixture,
)


def test_the_pages_and_their_assets_are_served_locally(city: City) -> None:
    for path in ("/m/medins/voucher", "/m/medins/terminal"):
        page = city.client.get(path)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert assets and all(a.startswith("/m/medins/static/") for a in assets), assets
        for asset in assets:
            assert city.client.get(asset).status_code == 200, asset
    script = city.client.get("/m/medins/static/voucher.js").text
    assert "/api/medins/voucher/qr" in script and "http" not in script.replace("https", "")
    assert city.client.get("/m/medins/static/..%2F..%2Fapi.py").status_code == 404
    assert city.client.get("/m/medins/static/nothing.js").status_code == 404


def test_the_dashboard_lists_the_panel_in_its_form(city: City) -> None:
    panels = city.client.get("/api/dashboard/panels", headers=city.h()).json()
    mine = next(p for p in panels if p["id"] == "medical_insurance")
    data = city.client.get(mine["data_url"], headers=city.h())
    assert data.status_code == 200, data.text
    form = data.json()
    labels = {c["label_en"] for c in form["cards"]}
    assert {"Settlements", "Fund paid", "Blocked", "Findings", "Open cases"} <= labels
    assert form["table"]["columns"][0]["key"] == "rule"
    citizen = city.client.get(mine["data_url"], headers=city.h("citizens", "citizen"))
    assert citizen.status_code == 403
    assert city.client.get(mine["data_url"]).status_code == 401

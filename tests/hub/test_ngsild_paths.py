"""NGSI-LD paths with an empty or dot segment are malformed requests (400), not 404."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from citybrain.app import create_app
from citybrain.core.config import load_settings


@pytest.mark.parametrize(
    "path",
    [
        "/ngsi-ld/v1/entities//attrs",
        "/ngsi-ld/v1/entities/urn:ngsi-ld:T:1//attrs",
        "/ngsi-ld/v1/entities/./attrs",
    ],
)
def test_empty_or_dot_segments_are_bad_requests(tmp_path: Path, path: str) -> None:
    settings = load_settings(data_dir=tmp_path, anonymous_role="bureau_admin")
    with TestClient(create_app(settings)) as client:
        response = client.patch(path, json={"a": {"type": "Property", "value": 1}})
    assert response.status_code == 400
    assert response.json()["type"].endswith("/BadRequestData")

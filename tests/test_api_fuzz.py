"""Schemathesis over /openapi.json: no generated request makes any endpoint answer 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from citybrain.app import create_app
from citybrain.core.config import load_settings


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A province node with its lifespan running (store open, notifier started)."""
    data: Path = tmp_path_factory.mktemp("fuzz")
    app = create_app(
        load_settings(data_dir=data, code="370000", level="province", anonymous_role="bureau_admin")
    )
    with TestClient(app) as c:
        yield c


def test_no_server_errors(client: TestClient) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 30  # the hub, tables, geo and node endpoints are all described
    failures: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=6,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=[not_a_server_error])

        try:
            run()
        except Exception as exc:  # collect every endpoint that fails, then report them all
            failures.append(f"{operation.label}: {str(exc).strip().splitlines()[0][:300]}")
    assert not failures, "\n".join(failures)

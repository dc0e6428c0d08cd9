"""Schemathesis against the OpenAPI schema: generated requests never cause a server error."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

schemathesis = pytest.importorskip("schemathesis")

from mrepo.api import add_token, create_app  # noqa: E402
from mrepo.graph import Repository  # noqa: E402
from tests.factories import make_population  # noqa: E402


def _app():
    root = Path(tempfile.mkdtemp(prefix="mrepo-fuzz-"))
    repo = Repository.init(str(root / "repo"))
    repo.commit(make_population(repo, n_items=1), message="m", branch="dev", author="t", time="2025-01-01T00:00:00Z")
    secret = add_token(root / "tokens.toml", "fuzzer", "maintain")
    app = create_app(str(root / "repo"), root / "tokens.toml", protected=("main",), max_body_bytes=1 << 16,
                     access_log=False)
    return app, secret


APP, SECRET = _app()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP, headers={"Authorization": f"Bearer {SECRET}"})


@schema.parametrize()
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case) -> None:
    for headers in ({"Authorization": f"Bearer {SECRET}"}, {}):
        response = case.call(headers=headers)
        assert response.status_code < 500, (case.method, case.formatted_path, response.text[:300])
        if response.status_code >= 400 and case.method != "HEAD":
            assert set(response.json()) == {"error", "detail"}

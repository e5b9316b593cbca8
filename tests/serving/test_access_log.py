"""The access log: off by default (uvicorn's text one too), opt-in JSON lines on the
service's log, sampled on request, never a body or an id typed into a URL."""

import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sentinel_dagster.cli.main import app as cli_app
from serving.access_log import AccessLog
from serving.registry import Registry
from serving.settings import ServiceSettings
from tests.serving.bundles import publish_small
from tests.serving.test_app import RAW, client_for


def requests_logged(stream: io.StringIO) -> list[dict]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [line for line in lines if line["event"] == "request"]


def _traffic(home: Path, **settings: str) -> None:
    publish_small(Registry(home / "registry"), seed=1)
    with client_for(home, **settings) as c:
        for i in range(4):
            c.post("/v1/score", json=RAW | {"transaction_id": f"secret-txn-{i}"})
        c.get("/health")
        c.get("/cards/4000123412341234")  # a path the app does not serve
        c.post("/v1/score", json={"amount": "ten"})  # 422


def test_off_by_default_the_middleware_is_not_even_installed(
    tmp_path: Path, sentinel_logs: io.StringIO
) -> None:
    _traffic(tmp_path)
    assert requests_logged(sentinel_logs) == []
    with client_for(tmp_path) as c:
        stack = c.app.middleware_stack  # type: ignore[attr-defined]
        assert not isinstance(stack, AccessLog)


def test_on_logs_every_request_without_bodies_or_ids(
    tmp_path: Path, sentinel_logs: io.StringIO
) -> None:
    _traffic(tmp_path, access_log="on")
    lines = requests_logged(sentinel_logs)
    assert [(r["method"], r["route"], r["status"]) for r in lines] == [
        *[("POST", "/v1/score", 200)] * 4,
        ("GET", "/health", 200),
        ("GET", "unmatched", 404),
        ("POST", "/v1/score", 422),
    ]
    assert all(r["ms"] >= 0 and r["logger"] == "sentinel.serving.access" for r in lines)
    text = sentinel_logs.getvalue()
    assert "secret-txn" not in text and "4000123412341234" not in text


def test_a_share_logs_every_nth_request(tmp_path: Path, sentinel_logs: io.StringIO) -> None:
    _traffic(tmp_path, access_log="0.5")
    assert len(requests_logged(sentinel_logs)) == 3  # 7 requests (and the lifespan), every 2nd


@pytest.mark.parametrize(
    ("value", "every"), [("off", 0), ("0.0", 0), ("on", 1), ("1", 1), ("0.01", 100), ("0.3", 3)]
)
def test_a_share_is_every_nth_request(value: str, every: int) -> None:
    assert ServiceSettings(access_log=value).access_log_every() == every


@pytest.mark.parametrize("value", ["sometimes", "2", "0.0001x", "-0.5"])
def test_a_bad_value_refuses_to_start_naming_the_setting(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="SENTINEL_ACCESS_LOG must be off, on or a share"):
        ServiceSettings(access_log=value)
    monkeypatch.setenv("SENTINEL_ACCESS_LOG", value)
    result = CliRunner().invoke(cli_app, ["serve"])
    assert result.exit_code == 2
    assert result.output.startswith("error: invalid SENTINEL_* settings: SENTINEL_ACCESS_LOG")


def test_sentinel_serve_turns_uvicorns_access_log_off(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    calls: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append(options))
    assert CliRunner().invoke(cli_app, ["serve", "--port", "8123"]).exit_code == 0
    (options,) = calls
    assert options["access_log"] is False and options["port"] == 8123
    assert options["log_level"] == "info"  # uvicorn's start-up lines; `sentinel up` quiets them

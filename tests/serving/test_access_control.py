"""API keys and rate limits: the service's own gate (serving/access_control.py) through the
app, the keys file and its CLI, and the token buckets in memory and on a real Redis."""

import json
import math
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from redis.backoff import NoBackoff
from redis.retry import Retry
from typer.testing import CliRunner

from sentinel_dagster.cli.main import app as cli_app
from serving.access_control import AccessControl, Caller
from serving.api_keys import KeyFileError, KeyRing, create_key, read_keys, revoke_key, token_hash
from serving.app import create_app
from serving.rate_limits import MemoryBuckets, Rate, RedisBuckets, parse_limits, parse_rate
from serving.registry import Registry
from serving.settings import ServiceSettings
from tests.serving.bundles import SEED_REQUEST, publish_small

LABEL = {"transaction_id": "t1", "is_fraud": True, "label_time": "2026-01-02T00:00:00Z"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    return tmp_path / "keys.json"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    publish_small(Registry(tmp_path / "registry"), seed=1)
    return tmp_path


def client(home: Path, **settings: object) -> TestClient:
    return TestClient(create_app(ServiceSettings(home=home, **settings)))  # type: ignore[arg-type]


# --- keys ---------------------------------------------------------------------------------


def test_the_keys_file_keeps_hashes_only_and_is_private(keys: Path) -> None:
    token = create_key(keys, "checkout", ["score", "feedback"])
    text = keys.read_text()
    assert token not in text and token_hash(token) in text
    assert keys.stat().st_mode & 0o777 == 0o600
    (key,) = read_keys(keys)
    assert (key.name, key.scopes) == ("checkout", frozenset({"score", "feedback"}))
    with pytest.raises(KeyFileError, match="a key named 'checkout' exists"):
        create_key(keys, "checkout", ["score"])
    with pytest.raises(KeyFileError, match="each one of score, feedback, admin"):
        create_key(keys, "other", ["scroe"])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not JSON"),
        ('{"keys": {}}', 'expected {"keys": [...]}'),
        ('{"keys": [{"name": "a", "sha256": "xyz", "scopes": ["score"]}]}', "64 lowercase hex"),
        ('{"keys": [{"name": "a", "sha256": "' + "0" * 64 + '", "scopes": []}]}', "scopes"),
        ('{"keys": [{"name": "a", "sha256": "' + "0" * 64 + '", "scopes": ["score"], '
         '"rate_limits": {"/v1/score": "fast"}}]}', "rate_limits./v1/score"),
        ('{"keys": [{"name": "a", "sha256": "' + "0" * 64 + '", "scopes": ["score"], '
         '"rate_limits": {"/v1/models": "5/s"}}]}', "not one of /v1/score"),
        ('{"keys": [{"name": "a", "sha256": "' + "0" * 64 + '", "scopes": ["score"], '
         '"colour": 1}]}', "unknown field 'colour'"),
    ],
)  # fmt: skip
def test_a_broken_keys_file_is_refused_naming_what_is_wrong(
    keys: Path, content: str, message: str
) -> None:
    keys.write_text(content)
    with pytest.raises(KeyFileError, match="keys.json.*" if message == "not JSON" else None) as e:
        read_keys(keys)
    assert message in str(e.value)


def test_a_missing_or_broken_keys_file_stops_the_service_and_the_cli_says_why(
    tmp_path: Path, keys: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(KeyFileError, match="no such file"), client(tmp_path, api_keys_file=keys):
        pass
    keys.write_text("{")
    monkeypatch.setenv("SENTINEL_API_KEYS_FILE", str(keys))
    result = CliRunner().invoke(cli_app, ["serve"])
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and "not JSON" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::"])
def test_serve_refuses_a_network_address_without_keys(
    host: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SENTINEL_HOME", str(tmp_path))
    result = CliRunner().invoke(cli_app, ["serve", "--host", host])
    assert result.exit_code == 2
    assert f"--host {host} is not loopback and authentication is off" in result.output


def test_the_api_key_commands_create_list_and_revoke(keys: Path) -> None:
    runner = CliRunner()
    made = runner.invoke(
        cli_app, ["api-key", "create", "ops", "--file", str(keys), "--scope", "admin"]
    )
    assert made.exit_code == 0, made.output
    token = made.stdout.strip().splitlines()[0]
    assert token.startswith("sst_") and KeyRing(keys).find(token).name == "ops"  # type: ignore[union-attr]
    listed = runner.invoke(cli_app, ["api-key", "list", "--file", str(keys)])
    assert listed.output.startswith("ops\tadmin\t") and token_hash(token) not in listed.output
    bad = runner.invoke(
        cli_app, ["api-key", "create", "x y", "--file", str(keys), "--scope", "score"]
    )
    assert bad.exit_code == 2 and "key name 'x y'" in bad.output
    gone = runner.invoke(cli_app, ["api-key", "revoke", "ops", "--file", str(keys)])
    assert gone.exit_code == 0 and KeyRing(keys).find(token) is None
    again = runner.invoke(cli_app, ["api-key", "revoke", "ops", "--file", str(keys)])
    assert again.exit_code == 2 and "no key named 'ops'" in again.output


# --- the gate through the app --------------------------------------------------------------


@pytest.fixture
def secured(home: Path, keys: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    tokens = {
        "scorer": create_key(keys, "scorer", ["score"]),
        "labeller": create_key(keys, "labeller", ["feedback"]),
        "ops": create_key(keys, "ops", ["admin"]),
    }
    with client(home, api_keys_file=keys) as c:
        yield c, tokens


def test_each_route_needs_its_scope(secured: tuple[TestClient, dict[str, str]]) -> None:
    c, tokens = secured
    missing = c.post("/v1/score", json=SEED_REQUEST)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    wrong = c.post("/v1/score", json=SEED_REQUEST, headers=bearer("sst_not-a-key"))
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert (
        c.post("/v1/score", json=SEED_REQUEST, headers=bearer(tokens["scorer"])).status_code == 200
    )
    batch = {"events": [SEED_REQUEST]}
    ok = c.post("/v1/score/batch", json=batch, headers=bearer(tokens["scorer"]))
    assert ok.status_code == 200
    no_scope = c.post("/v1/score", json=SEED_REQUEST, headers=bearer(tokens["labeller"]))
    assert no_scope.status_code == 403
    assert (
        no_scope.json()["detail"] == "API key 'labeller' lacks the 'score' scope this route needs"
    )
    assert c.post("/v1/feedback", json=LABEL, headers=bearer(tokens["scorer"])).status_code == 403
    assert c.post("/v1/feedback", json=LABEL, headers=bearer(tokens["labeller"])).status_code == 200
    assert c.post("/admin/reload", headers=bearer(tokens["scorer"])).status_code == 403
    assert c.post("/admin/reload", headers=bearer(tokens["ops"])).status_code == 200
    assert c.get("/v1/models").status_code == 401
    assert c.get("/v1/models", headers=bearer(tokens["labeller"])).status_code == 200  # any key
    for open_route in ("/health", "/metrics", "/openapi.json"):  # probes, scrapers, docs
        assert c.get(open_route).status_code == 200
    metrics = c.get("/metrics").text
    for line in (
        'sentinel_auth_refused_total{reason="missing_token",route="/v1/score"} 1.0',
        'sentinel_auth_refused_total{reason="invalid_token",route="/v1/score"} 1.0',
        'sentinel_auth_refused_total{reason="missing_scope",route="/v1/score"} 1.0',
        'sentinel_auth_refused_total{reason="missing_scope",route="/admin/*"} 1.0',
        'sentinel_requests_total{route="/v1/score",status="401"} 2.0',
    ):
        assert line in metrics, line


def test_behind_a_path_prefix_every_route_is_checked_as_without_it(home: Path, keys: Path) -> None:
    """uvicorn --root-path /fraud: `path` carries the prefix, Starlette routes without it;
    the gate must see the route, or every protected route would be open."""
    token = create_key(keys, "scorer", ["score"])
    app = create_app(ServiceSettings(home=home, api_keys_file=keys))
    with TestClient(app, root_path="/fraud") as c:
        scope_path = c.post("/fraud/v1/score", json=SEED_REQUEST)
        assert scope_path.status_code == 401  # no key: refused, as without the prefix
        assert c.post("/fraud/admin/canary/resume").status_code == 401
        assert c.get("/fraud/v1/models").status_code == 401
        ok = c.post("/fraud/v1/score", json=SEED_REQUEST, headers=bearer(token))
        assert ok.status_code == 200 and ok.json()["decided_by"] == "champion"
        metrics = c.get("/fraud/metrics").text
        assert 'sentinel_requests_total{route="/v1/score",status="200"} 1.0' in metrics


def test_the_openapi_document_says_which_routes_need_a_key(
    secured: tuple[TestClient, dict[str, str]], home: Path
) -> None:
    c, _ = secured
    doc = c.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["APIKey"]["scheme"] == "bearer"
    for path, method in (("/v1/score", "post"), ("/v1/feedback", "post"), ("/v1/models", "get")):
        operation = doc["paths"][path][method]
        assert operation["security"] == [{"APIKey": []}], path
        assert "401" in operation["responses"], path
    assert "429" in doc["paths"]["/v1/score"]["post"]["responses"]
    assert "security" not in doc["paths"]["/health"]["get"]
    with client(home) as open_service:  # without keys only the admin routes say so
        doc = open_service.get("/openapi.json").json()
        assert "security" not in doc["paths"]["/v1/score"]["post"]
        assert "401" not in doc["paths"]["/v1/score"]["post"]["responses"]
        assert doc["paths"]["/admin/reload"]["post"]["security"] == [{"APIKey": []}]


def test_rotation_two_keys_at_once_then_the_old_one_revoked_without_a_restart(
    secured: tuple[TestClient, dict[str, str]], keys: Path
) -> None:
    c, tokens = secured
    new = create_key(keys, "scorer-2026-12", ["score"])
    c.app.state.service.follow_controls()  # type: ignore[attr-defined]  # the background tick
    for token in (tokens["scorer"], new):
        assert c.post("/v1/score", json=SEED_REQUEST, headers=bearer(token)).status_code == 200
    revoke_key(keys, "scorer")
    c.app.state.service.follow_controls()  # type: ignore[attr-defined]
    old = c.post("/v1/score", json=SEED_REQUEST, headers=bearer(tokens["scorer"]))
    assert old.status_code == 401
    assert c.post("/v1/score", json=SEED_REQUEST, headers=bearer(new)).status_code == 200
    keys.write_text("{")  # a broken edit keeps the keys in force
    c.app.state.service.follow_controls()  # type: ignore[attr-defined]
    assert c.post("/v1/score", json=SEED_REQUEST, headers=bearer(new)).status_code == 200


def test_the_admin_token_still_works_beside_keys(home: Path, keys: Path) -> None:
    create_key(keys, "scorer", ["score"])
    admin_token = "an-admin-token-0123456789"
    with client(home, api_keys_file=keys, admin_token=admin_token) as c:
        assert c.post("/admin/reload", headers=bearer(admin_token)).status_code == 200
        assert (
            c.post("/v1/score", json=SEED_REQUEST, headers=bearer(admin_token)).status_code == 403
        )


def test_without_keys_only_loopback_is_answered(home: Path) -> None:
    """The app's own guard, for servers started without `sentinel serve` (the request's
    `server` is the address it arrived at)."""
    with client(home) as c:
        control: AccessControl = c.app.state.service.access  # type: ignore[attr-defined]
        scope = {"path": "/v1/score", "headers": [], "client": ("10.0.0.9", 5000)}
        servers = {("127.0.0.1", 8000): True, ("::1", 8000): True, ("10.0.0.5", 8000): False,
                   ("192.168.1.4", 80): False}  # fmt: skip
        for server, allowed in servers.items():
            refusal, _ = control.authorize({**scope, "server": server}, "/v1/score")
            assert (refusal is None) == allowed, server
        refusal, _ = control.authorize({**scope, "server": ("10.0.0.5", 8000)}, "/v1/score")
        assert refusal is not None and refusal.status == 403
        assert "SENTINEL_API_KEYS_FILE" in refusal.detail
        assert control.authorize({**scope, "server": ("10.0.0.5", 80)}, "/health") == (
            None, None,
        )  # fmt: skip
    with client(home, allow_unauthenticated=True) as c:
        control = c.app.state.service.access  # type: ignore[attr-defined]
        refusal, _ = control.authorize({**scope, "server": ("10.0.0.5", 8000)}, "/v1/score")
        assert refusal is None


# --- rate limits -----------------------------------------------------------------------------


def test_rates_parse_and_bad_ones_are_refused_naming_the_setting() -> None:
    assert parse_rate("500/s") == Rate(500.0, 500.0)
    assert parse_rate("60/min:10") == Rate(1.0, 10.0)
    assert parse_rate("0.5/s") == Rate(0.5, 1.0)  # a burst of at least one request
    assert set(parse_limits("/v1/score=10/s, /v1/feedback=1/s")) == {"/v1/score", "/v1/feedback"}
    for bad in ("10", "10/fortnight", "0/s", "-1/s", "5/s:0"):
        with pytest.raises(ValueError, match="rate"):
            parse_rate(bad)
    with pytest.raises(ValueError, match="expected route=rate"):
        ServiceSettings(rate_limits="/v1/models=5/s")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_refills_at_its_rate_and_says_how_long_to_wait() -> None:
    clock = Clock()
    buckets, rate = MemoryBuckets(clock), Rate(per_s=2.0, burst=4.0)
    assert [buckets.take("k", rate, 1) for _ in range(4)] == [0.0] * 4
    assert buckets.take("k", rate, 1) == pytest.approx(0.5)  # empty: one token in 0.5 s
    assert buckets.take("other", rate, 1) == 0.0  # buckets are per key
    clock.now += 0.5
    assert buckets.take("k", rate, 1) == 0.0
    clock.now += 100  # refilled, never past the burst
    assert buckets.take("k", rate, 4) == 0.0
    assert buckets.take("k", rate, 1) > 0
    assert math.isinf(buckets.take("k", rate, 5))  # more than the burst: never
    assert buckets.prune() == 1  # "other" is full again: forgotten; "k" is not
    clock.now += 1.5
    assert buckets.prune() == 0  # k holds 3 of 4 tokens: still needed
    clock.now += 0.5
    assert buckets.prune() == 1 and buckets.take("k", rate, 4) == 0.0  # full: a fresh one


def test_over_the_limit_is_429_with_retry_after_per_key_and_route(home: Path, keys: Path) -> None:
    a, b = create_key(keys, "a", ["score"]), create_key(keys, "b", ["score"])
    limits = "/v1/score=2/s,/v1/score/batch=5/s"
    with client(home, api_keys_file=keys, rate_limits=limits) as c:
        control: AccessControl = c.app.state.service.access  # type: ignore[attr-defined]
        clock = Clock()
        control.buckets = MemoryBuckets(clock)  # time stands still: nothing refills
        answers = [c.post("/v1/score", json=SEED_REQUEST, headers=bearer(a)) for _ in range(3)]
        assert [r.status_code for r in answers] == [200, 200, 429]
        assert answers[2].headers["retry-after"] == "1"
        assert "rate limit of 2/s (burst 2) for key 'a' on /v1/score" in answers[2].json()["detail"]
        assert c.post("/v1/score", json=SEED_REQUEST, headers=bearer(b)).status_code == 200
        batch = {"events": [SEED_REQUEST] * 3}  # one token per event
        assert c.post("/v1/score/batch", json=batch, headers=bearer(a)).status_code == 200
        over = c.post("/v1/score/batch", json=batch, headers=bearer(a))
        assert over.status_code == 429 and over.headers["retry-after"] == "1"
        huge = c.post("/v1/score/batch", json={"events": [SEED_REQUEST] * 6}, headers=bearer(b))
        assert huge.status_code == 429 and "send smaller batches" in huge.json()["detail"]
        assert "retry-after" not in huge.headers
        clock.now += 1.0
        assert c.post("/v1/score", json=SEED_REQUEST, headers=bearer(a)).status_code == 200
        metrics = c.get("/metrics").text
        assert 'sentinel_rate_limited_total{key="a",route="/v1/score"} 1.0' in metrics
        assert 'sentinel_rate_limited_total{key="a",route="/v1/score/batch"} 1.0' in metrics
        assert 'sentinel_requests_total{route="/v1/score",status="429"} 1.0' in metrics
        assert 'sentinel_requests_total{route="/v1/score/batch",status="429"} 2.0' in metrics
        # refusals are not timed: the latency histogram holds the answered requests only
        hot = c.app.state.service.metrics.hot  # type: ignore[attr-defined]
        assert sum(hot.latency["/v1/score"].counts) == hot.requests["/v1/score", 200]


def test_a_key_of_its_own_limit_and_without_keys_the_client_address(home: Path, keys: Path) -> None:
    token = create_key(keys, "big", ["score"])
    data = json.loads(keys.read_text())
    data["keys"][0]["rate_limits"] = {"/v1/score": "1/s"}
    keys.write_text(json.dumps(data))
    with client(home, api_keys_file=keys, rate_limits="/v1/score=100/s") as c:
        c.app.state.service.access.buckets = MemoryBuckets(Clock())  # type: ignore[attr-defined]
        codes = [c.post("/v1/score", json=SEED_REQUEST, headers=bearer(token)).status_code
                 for _ in range(2)]  # fmt: skip
        assert codes == [200, 429]
    with client(home, rate_limits="/v1/feedback=1/s") as c:  # no keys: by client address
        c.app.state.service.access.buckets = MemoryBuckets(Clock())  # type: ignore[attr-defined]
        codes = [c.post("/v1/feedback", json=LABEL).status_code for _ in range(2)]
        assert codes == [200, 429]
        metrics = c.get("/metrics").text  # one label for every address, not one each
        assert 'sentinel_rate_limited_total{key="unauthenticated",route="/v1/feedback"} 1.0' in (
            metrics
        )
        assert c.post("/v1/score", json=SEED_REQUEST).status_code == 200  # another route


def test_redis_buckets_are_shared_by_every_worker_and_a_failure_lets_requests_through() -> None:
    client = redis.Redis(host="127.0.0.1", port=6379)
    prefix = f"test-{uuid.uuid4().hex}:"
    rate = Rate(per_s=1.0, burst=3.0)
    workers = [RedisBuckets(client, prefix), RedisBuckets(client, prefix)]
    try:
        waits = [workers[i % 2].take("k", rate, 1) for i in range(4)]
        assert waits[:3] == [0.0, 0.0, 0.0] and 0.0 < waits[3] <= 1.0  # one bucket for both
        assert math.isinf(workers[0].take("k", rate, 4))
        ttl = client.pttl(f"{prefix}rate:k")
        assert 0 < ttl <= 4_000  # gone once it would be full again
    finally:
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
    unreachable = redis.Redis(port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    down = RedisBuckets(unreachable, "x:")  # as the service's client: no retries
    control = AccessControl(KeyRing(None), {"/v1/score": rate}, down)
    assert control.charge(Caller(None, "10.0.0.1"), "/v1/score") is None  # not a 5xx
    assert control.limiter_errors == 1


def test_redis_leases_save_round_trips_and_never_grant_more_than_the_bucket() -> None:
    client = redis.Redis(host="127.0.0.1", port=6379)
    prefix = f"test-{uuid.uuid4().hex}:"
    rate = Rate(per_s=100.0, burst=10.0)  # a lease: 100/s x 50 ms = 5 tokens
    workers = [RedisBuckets(client, prefix), RedisBuckets(client, prefix)]
    calls = 0
    for worker in workers:
        script = worker._script

        def counted(*args: object, _script=script, **kwargs: object) -> object:
            nonlocal calls
            calls += 1
            return _script(*args, **kwargs)

        worker._script = counted  # type: ignore[method-assign]
    try:
        granted = sum(workers[i % 2].take("k", rate, 1) == 0.0 for i in range(40))
        # 10 in the bucket, plus what refills at 100/s while this runs (a few ms)
        assert 10 <= granted <= 13
        assert calls < 40  # leases: most takes never reached Redis
    finally:
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)

"""API keys and a rate limit on real servers: `sentinel serve --workers 2` and a second
`sentinel serve` (as on another host) sharing one redis-server draw from one bucket per
key and route, and refuse what the keys file does not allow."""

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from serving.api_keys import create_key
from serving.registry import Registry
from tests.e2e.test_redis_workers import serve
from tests.redis_server import redis_server
from tests.serving.bundles import SEED_REQUEST, publish_small

LABEL = {"transaction_id": "never-scored", "is_fraud": False,
         "label_time": "2026-01-02T00:00:00Z"}  # fmt: skip


def status(url: str, body: dict, token: str | None) -> tuple[int, dict[str, str]]:
    """The status and headers of one request on a new connection (either worker)."""
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, json.dumps(body).encode(), headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as refused:
        return refused.code, dict(refused.headers)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[str], dict]]:
    home = tmp_path_factory.mktemp("secured")
    publish_small(Registry(home / "registry"), seed=1)
    keys = home / "keys.json"
    tokens = {"labels": create_key(keys, "labels", ["feedback"]),
              "scorer": create_key(keys, "scorer", ["score"])}  # fmt: skip
    settings = {
        "SENTINEL_API_KEYS_FILE": str(keys),
        "SENTINEL_RATE_LIMITS": "/v1/feedback=1/min:5",  # five, then about one a minute
    }
    with (
        redis_server(home / "redis") as redis_url,
        serve(home, redis_url, workers=2, **settings) as workers,
        serve(home, redis_url, workers=1, **settings) as other_host,
    ):
        yield [workers, other_host], tokens


def test_workers_and_hosts_share_one_bucket_per_key(secured) -> None:
    urls, tokens = secured
    codes = [status(f"{urls[i % 2]}/v1/feedback", LABEL, tokens["labels"])[0] for i in range(9)]
    assert codes.count(200) == 5 and codes[:5] == [200] * 5  # not five per process
    refused = status(f"{urls[0]}/v1/feedback", LABEL, tokens["labels"])
    assert refused[0] == 429 and int(refused[1]["retry-after"]) >= 1
    # another route is another bucket
    assert status(f"{urls[1]}/v1/score", SEED_REQUEST, tokens["scorer"])[0] == 200


def test_real_servers_refuse_missing_wrong_and_out_of_scope_keys(secured) -> None:
    urls, tokens = secured
    for url in urls:
        missing, headers = status(f"{url}/v1/score", SEED_REQUEST, None)
        assert missing == 401 and headers["www-authenticate"] == "Bearer"
        assert status(f"{url}/v1/score", SEED_REQUEST, "sst_guess")[0] == 401
        assert status(f"{url}/v1/score", SEED_REQUEST, tokens["labels"])[0] == 403
        assert status(f"{url}/v1/score", SEED_REQUEST, tokens["scorer"])[0] == 200

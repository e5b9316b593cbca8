"""Request profiles: the model that answers is chosen by what the request carries."""

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.bundle import BundleError, load_bundle, sha256_file
from serving.profiles import (
    DEFAULT_PROFILES,
    FULL,
    PRECOMPUTED_7,
    ProfileError,
    declare_profile,
    largest_first,
    wanted_profile,
)
from serving.registry import Registry
from serving.schemas import ScoreRequest
from serving.settings import ServiceSettings
from tests.serving.bundles import make_writable, publish_small, publish_with_profiles
from tests.serving.test_heuristic import BENIGN, RISKY

RAW = {"amount": 50.0, "card_id": "c1", "merchant_id": "m1", "transaction_id": "t1"}
EVENT_ONLY = declare_profile("event-fields", ["amount", "hour_of_day", "channel_online"])


def _wanted(body: dict, profiles=DEFAULT_PROFILES) -> str:
    return wanted_profile(ScoreRequest.model_validate(body), largest_first(list(profiles)))


def test_the_request_shape_picks_the_profile() -> None:
    assert _wanted(RISKY) == PRECOMPUTED_7  # the seven, no card
    assert _wanted(RAW) == FULL  # a card: online state and the full model
    assert _wanted({**RISKY, **RAW}) == FULL  # mixed: the full model, given values first
    six = {k: v for k, v in RISKY.items() if k != "avg_amount_7d"}
    assert _wanted(six) == FULL  # a profile's features must all be carried
    # A new card has no 7-day average: an explicit null still carries the feature.
    assert _wanted({**six, "avg_amount_7d": None}) == PRECOMPUTED_7
    assert _wanted({"amount": 10.0}) == FULL  # nothing but an amount: cold start


def test_the_largest_carried_profile_wins_and_fields_count_for_their_features() -> None:
    profiles = (*DEFAULT_PROFILES, EVENT_ONLY)
    assert _wanted({"amount": 10.0, "channel": "online"}, profiles) == "event-fields"
    assert _wanted({"amount": 10.0, "channel_online": 0}, profiles) == "event-fields"
    assert _wanted({"amount": 10.0}, profiles) == FULL  # no channel: event-fields not carried
    assert _wanted(RISKY, profiles) == PRECOMPUTED_7  # 7 features beat 3


@pytest.mark.parametrize(
    ("name", "features", "message"),
    [
        ("full", ["amount"], "not 'full'"),
        ("Bad Name", ["amount"], "lower-case"),
        ("p", ["nope"], "unknown features"),
        ("p", ["txn_count_10m"], "a request cannot carry"),
        ("p", ["amount", "amount"], "distinct"),
        ("p", [], "at least one"),
    ],
)
def test_a_profile_no_request_could_match_is_refused(
    name: str, features: list[str], message: str
) -> None:
    with pytest.raises(ProfileError, match=message):
        declare_profile(name, features)


def _client(home: Path) -> TestClient:
    return TestClient(create_app(ServiceSettings(home=home)))


def test_each_request_is_scored_by_its_profiles_model(tmp_path: Path) -> None:
    publish_with_profiles(Registry(tmp_path / "registry"), threshold=0.5)
    with _client(tmp_path) as client:
        batch = client.post("/v1/score/batch", json={"events": [RISKY, RAW, BENIGN]}).json()
        models = client.get("/v1/models").json()
    risky, raw, benign = batch["results"]
    assert [r["profile"] for r in batch["results"]] == [PRECOMPUTED_7, FULL, PRECOMPUTED_7]
    assert all("profile_unavailable" not in r for r in batch["results"])
    # The toy profile model flags a high 24-hour count: 12 is declined, 3 approved.
    assert (risky["decision"], benign["decision"]) == ("decline", "approve")
    assert raw["state"] == "added" and risky["state"] == "stateless"
    champion = {p["profile"]: p for p in models["profiles"]["champion"]}
    assert set(champion) == {FULL, PRECOMPUTED_7}
    assert len(champion[PRECOMPUTED_7]["features"]) == 7
    assert models["profiles"]["challenger"] is None


def test_a_bundle_without_the_wanted_profile_answers_with_the_full_model_and_says_so(
    tmp_path: Path,
) -> None:
    publish_small(Registry(tmp_path / "registry"))  # a full model only
    with _client(tmp_path) as client:
        answer = client.post("/v1/score", json=RISKY).json()
    assert answer["profile"] == FULL
    assert answer["profile_unavailable"] == PRECOMPUTED_7
    assert answer["scored_by"] == "model"


def test_a_bundle_without_a_full_model_scores_raw_events_with_its_profile_model(
    tmp_path: Path,
) -> None:
    publish_with_profiles(Registry(tmp_path / "registry"), full=False)
    with _client(tmp_path) as client:
        raw = client.post("/v1/score", json=RAW).json()
        risky = client.post("/v1/score", json=RISKY).json()
    # The seven features of a raw event come from the online state.
    assert (raw["profile"], raw["profile_unavailable"], raw["state"]) == (
        PRECOMPUTED_7, FULL, "added",
    )  # fmt: skip
    assert risky["profile"] == PRECOMPUTED_7 and "profile_unavailable" not in risky


def test_the_challenger_shadows_with_its_own_model_for_the_profile(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    publish_small(registry, seed=1)  # champion: full model only
    publish_with_profiles(registry, seed=2, minute=5)  # challenger with precomputed-7
    with _client(tmp_path) as client:
        answer = client.post("/v1/score", json=RISKY).json()
    assert answer["profile"] == FULL and answer["profile_unavailable"] == PRECOMPUTED_7
    assert 0.0 <= answer["shadow_fraud_probability"] <= 1.0
    scored = (tmp_path / "scored").glob("scored-*.jsonl")
    line = next(iter(scored)).read_text().splitlines()[-1]
    assert '"profile":"full"' in line and '"challenger_profile":"precomputed-7"' in line


def test_a_profile_model_of_the_wrong_width_is_rejected(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    version, _ = publish_with_profiles(registry)
    bundle = registry.bundle_dir(version)
    make_writable(bundle)
    # Swap in the full model's ONNX (and its checksum): sound, but 39 features wide.
    (bundle / "profile-precomputed-7.onnx").write_bytes((bundle / "model.onnx").read_bytes())
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["profile-precomputed-7.onnx"] = sha256_file(bundle / "model.onnx")
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"reads \d+ features, not 7"):
        load_bundle(bundle)


def test_the_champion_answers_with_the_largest_profile_model_it_has(tmp_path: Path) -> None:
    """A request carrying the seven features wants precomputed-7; a champion with only a
    smaller profile model that the request also carries answers with that one, not with
    cold-start values through the full model."""
    publish_with_profiles(Registry(tmp_path / "registry"), profiles=(EVENT_ONLY,))
    with _client(tmp_path) as client:
        answer = client.post("/v1/score", json=RISKY).json()
    assert answer["profile"] == "event-fields" and "profile_unavailable" not in answer


def test_a_challengers_profiles_never_change_the_champions_answer(tmp_path: Path) -> None:
    nine = declare_profile("nine", [*RISKY, "day_of_week", "merchant_category_code"])
    registry = Registry(tmp_path / "registry")
    publish_with_profiles(registry, seed=1)  # champion: full + precomputed-7
    body = {**RISKY, "merchant_category": "jewelry"}
    with _client(tmp_path) as client:
        alone = client.post("/v1/score", json=body).json()
    publish_with_profiles(registry, seed=2, minute=5, profiles=(nine,))  # challenger
    with _client(tmp_path) as client:
        shadowed = client.post("/v1/score", json=body).json()
    assert alone["profile"] == shadowed["profile"] == PRECOMPUTED_7
    assert alone["fraud_probability"] == shadowed["fraud_probability"]
    assert "shadow_fraud_probability" in shadowed
    line = max((tmp_path / "scored").glob("scored-*.jsonl")).read_text().splitlines()[-1]
    assert '"challenger_profile":"nine"' in line  # the challenger used its own, larger one


def test_a_turn_mixing_profiles_makes_one_model_call_per_profile(tmp_path: Path) -> None:
    publish_with_profiles(Registry(tmp_path / "registry"))
    with _client(tmp_path) as client:
        client.post("/v1/score/batch", json={"events": [RISKY, RAW, BENIGN, RISKY]})
        batching = client.get("/v1/models").json()["batching"]
    assert batching == {"model_calls": 2, "rows": 4}

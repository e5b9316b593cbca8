"""Service settings: one pydantic-settings class; the seed's variables keep their meaning."""

from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import AliasChoices, Field, PrivateAttr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from serving.breaker import BreakerConfig
from serving.canary import CanaryConfig
from serving.feature_engine import EngineConfig
from serving.features import DEFAULT_LABEL_MATURITY_DAYS, FeatureSet
from serving.rate_limits import Rate, parse_limits
from serving.signatures import load_public_keys

MIN_ADMIN_TOKEN = 16
BUNDLE_PUBLIC_KEYS_VAR = "SENTINEL_BUNDLE_PUBLIC_KEYS"


def access_log_every(value: str) -> int:
    """SENTINEL_ACCESS_LOG as "every n-th request": off 0, on 1, a share s in (0, 1] 1/s."""
    word = value.strip().lower()
    if word in ("off", "", "0", "false", "no"):
        return 0
    if word in ("on", "1", "true", "yes"):
        return 1
    try:
        share = float(word)
    except ValueError:
        share = -1.0
    if share == 0:
        return 0
    if not 0 < share <= 1:
        raise ValueError(
            f"SENTINEL_ACCESS_LOG must be off, on or a share in (0, 1] such as 0.01 (got {value!r})"
        )
    return max(1, round(1 / share))


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SENTINEL_", extra="ignore")

    home: Path = Field(default=Path("var"), description="SENTINEL_HOME: registry and logs.")
    # The seed's variables. A pinned champion directory disables following the registry.
    artifacts_dir: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("SENTINEL_ARTIFACTS_DIR", "FRAUD_ARTIFACTS_DIR"),
        description="Pin the champion to this bundle directory.",
    )
    shadow_artifacts_dir: Path | None = Field(
        default=None, description="Pin the shadow (challenger) to this bundle directory."
    )
    circuit_threshold_ms: float = Field(default=60.0, gt=0, description="Model deadline.")
    force_circuit_open: bool = Field(default=False, description="Always use the heuristic.")
    inject_latency_ms: float = Field(default=0.0, ge=0, description="Testing only.")
    # Added by Sentinel-Stream.
    reload_interval_s: float = Field(default=5.0, gt=0, description="Registry polling period.")
    admin_token: str | None = Field(
        default=None,
        description="Bearer token for /admin/*, at least 16 characters; unset or empty: "
        "admin routes disabled.",
    )
    api_keys_file: Path | None = Field(
        default=None,
        description="JSON file of API keys (hashes, names, scopes; `sentinel api-key "
        "create`): set, every scoring, feedback and model route needs a bearer key; unset, "
        "the service answers only over loopback (README: Going live).",
    )
    allow_unauthenticated: bool = Field(
        default=False,
        description="Answer without API keys on a non-loopback address: only when a gateway "
        "in front authenticates callers.",
    )
    rate_limits: str = Field(
        default="",
        description="Token-bucket limits per caller (key, or client address without keys) "
        "and route, e.g. `/v1/score=2000/s,/v1/score/batch=20000/s:40000,/v1/feedback=200/s` "
        "(RATE/UNIT[:BURST]; a batch takes one token per event); empty: unlimited. A key's "
        "own `rate_limits` in the keys file override these.",
    )
    failure_policy: Literal["heuristic", "review", "decline", "approve"] = Field(
        default="heuristic",
        description="What answers when the model cannot (breaker open, model failed or "
        "ejected, no model loaded): the heuristic's decision, or review, decline or approve "
        "every such payment (the answer's `failure_policy` says which).",
    )
    canary_share: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Share of cards whose payments the challenger decides (the same cards "
        "for as long as it serves); 0: the challenger only shadows.",
    )
    canary_max_decline_rate_change: float = Field(
        default=0.01,
        gt=0,
        le=1,
        description="Stop the canary (back to 0%) when the challenger's decline rate differs "
        "from the champion's on the same events by more than this (absolute).",
    )
    canary_min_events: int = Field(
        default=1_000, gt=0, description="Events both models scored before judging."
    )
    canary_window: int = Field(
        default=5_000, gt=0, description="The last events the decline rates are compared on."
    )
    log_features: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Share of scored events whose feature vector the scored-event log "
        "keeps (chosen by transaction id), for the drift watch.",
    )
    access_log: str = Field(
        default="off",
        description="One JSON `request` line per request on the service log at INFO (method, "
        "route, status, milliseconds; never a body): off (the default: the hot path pays "
        "nothing), on, or a share such as 0.01 (every n-th request, n = round(1 / share)).",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Service log level (JSON lines on stderr)."
    )
    max_body_bytes: int = Field(
        default=1_048_576, gt=0, description="Larger bodies get 413 (all but the batch route)."
    )
    max_batch_events: int = Field(default=10_000, gt=0, description="Events per batch request.")
    max_event_bytes: int = Field(
        default=4_096,  # an event with every field at its longest, non-ASCII ids escaped
        gt=0,
        description="Room per event in a batch body: the batch route takes up to "
        "max_batch_events x max_event_bytes (+ 1 KiB), so a full batch always fits.",
    )
    breaker_window: int = Field(default=100, gt=0, description="Calls in the sliding window.")
    breaker_minimum_calls: int = Field(default=20, gt=0, description="Calls before judging.")
    breaker_failure_rate: float = Field(
        default=0.5, gt=0, le=1, description="Slow-or-failed share."
    )
    breaker_open_wait_s: float = Field(default=5.0, gt=0, description="Open before half-open.")
    breaker_half_open_probes: int = Field(default=5, gt=0, description="Probes to close again.")
    max_clock_skew_s: float = Field(
        default=300.0,
        gt=0,
        description="Events and labels stamped more than this ahead of the wall clock are "
        "refused (422): a bad timestamp must never move the engine's clock.",
    )
    max_cards: int = Field(
        default=1_000_000,
        gt=0,
        description="Cards held in memory; beyond it the least "
        "recently used card is evicted (and starts cold).",
    )
    max_merchants: int = Field(
        default=200_000,
        gt=0,
        description="Merchants held in memory (least recently used evicted beyond it).",
    )
    dedup_window_s: float = Field(
        default=2 * 86_400.0,
        gt=0,
        description="How long (event time) a transaction_id is remembered: a retry within it "
        "gets its stored answer (409 with another body), and a label carrying only the id is "
        "attributed to its card and merchant.",
    )
    label_maturity_days: float = Field(
        default=DEFAULT_LABEL_MATURITY_DAYS,
        ge=0,
        le=365,
        description="The lagged label windows' lag; must match the policy the bundles were "
        "trained with (bundles declaring another are refused).",
    )
    # The shared online state (serving/redis_state.py); without it the state is in memory.
    redis_url: str | None = Field(
        default=None,
        description="redis://host:port/db: every worker and host shares the online state "
        "there (required for more than one worker).",
    )
    redis_prefix: str = Field(
        default="sentinel:", description="Prefix of every key the service writes in Redis."
    )
    redis_timeout_ms: float = Field(
        default=500.0,
        gt=0,
        description="A Redis call that takes longer fails (503) instead of stalling the worker.",
    )
    redis_answer_delay_ms: float = Field(
        default=5.0,
        ge=0,
        description="Answers kept for retries go to Redis with the worker's next call, or "
        "after this long without one (until then a retry on another worker is scored "
        "again); 0: written before each answer is sent (one more round trip per call).",
    )
    # The in-memory state's durability (serving/journal.py).
    journal_fsync_ms: float = Field(
        default=1000.0,
        ge=0,
        description="fsync the state journal at most this often (a machine crash loses at "
        "most this much; kill -9 loses nothing answered); 0: on every write (slower).",
    )
    snapshot_every_events: int = Field(
        default=1_000_000, gt=0, description="Snapshot the state after this many journal lines."
    )
    snapshot_interval_s: float = Field(
        default=300.0, gt=0, description="...or this long after the last snapshot."
    )
    # Signed bundles (serving/signatures.py).
    bundle_public_keys: str | None = Field(
        default=None,
        description="Comma-separated PEM public key files and/or directories of *.pub and "
        "*.pem files: only bundles signed by one of these keys are loaded (several at once "
        "while keys rotate). Unset: bundle signatures are not checked.",
    )
    _trusted_keys: dict[str, Ed25519PublicKey] | None = PrivateAttr(default=None)

    def feature_set(self) -> FeatureSet:
        return FeatureSet(label_maturity_days=self.label_maturity_days)

    def engine_config(self) -> EngineConfig:
        return EngineConfig(features=self.feature_set(), dedup_window_s=self.dedup_window_s)

    @field_validator("admin_token", mode="after")
    @classmethod
    def _admin_off_or_strong(cls, token: str | None) -> str | None:
        """Unset or empty means admin is off; a short token is refused, not accepted."""
        if not token:
            return None
        if len(token) < MIN_ADMIN_TOKEN:
            raise ValueError(
                f"SENTINEL_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN} characters "
                "(unset it to disable the admin routes)"
            )
        return token

    @field_validator("rate_limits", mode="after")
    @classmethod
    def _rate_limits_parse(cls, value: str) -> str:
        parse_limits(value)  # refuses a malformed limit, naming it
        return value

    def route_limits(self) -> dict[str, Rate]:
        return parse_limits(self.rate_limits)

    @field_validator("access_log", mode="after")
    @classmethod
    def _access_log_share(cls, value: str) -> str:
        access_log_every(value)  # refuses anything else, naming the setting
        return value

    def access_log_every(self) -> int:
        """Log every n-th request (0: none)."""
        return access_log_every(self.access_log)

    def batch_body_bytes(self) -> int:
        """The batch route's body limit, derived from the batch limit so that it is
        reachable: a full batch of events of at most `max_event_bytes` each always fits."""
        return max(self.max_body_bytes, self.max_batch_events * self.max_event_bytes + 1_024)

    def breaker_config(self) -> BreakerConfig:
        return BreakerConfig(
            window_size=self.breaker_window,
            minimum_calls=self.breaker_minimum_calls,
            failure_rate=self.breaker_failure_rate,
            open_wait_s=self.breaker_open_wait_s,
            half_open_probes=self.breaker_half_open_probes,
        )

    def canary_config(self) -> CanaryConfig:
        return CanaryConfig(
            share=self.canary_share,
            max_decline_rate_change=self.canary_max_decline_rate_change,
            min_events=self.canary_min_events,
            window=self.canary_window,
        )

    def registry_root(self) -> Path:
        return self.home / "registry"

    @field_validator("bundle_public_keys", mode="after")
    @classmethod
    def _bundle_public_keys_load(cls, spec: str | None) -> str | None:
        """A key file that is missing or not an Ed25519 public key stops the service at
        startup, naming the setting (a SigningKeyError is a ValueError)."""
        if spec is None or not spec.strip():
            return None
        load_public_keys(spec, BUNDLE_PUBLIC_KEYS_VAR)
        return spec

    def trusted_bundle_keys(self) -> dict[str, Ed25519PublicKey] | None:
        """The public keys bundles must be signed by, by key id (read once); None: bundle
        signatures are not checked."""
        if self.bundle_public_keys is not None and self._trusted_keys is None:
            self._trusted_keys = load_public_keys(self.bundle_public_keys, BUNDLE_PUBLIC_KEYS_VAR)
        return self._trusted_keys

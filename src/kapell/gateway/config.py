"""Gateway settings: limits, timeouts and tenants. Plain frozen dataclasses, no I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from kapell.policy.drift import DriftSettings


@dataclass(frozen=True)
class TenantConfig:
    """A tenant: who may call which models, how often and how much.

    ``models`` empty means every model. Limits of 0 mean unlimited. ``api_key_sha256`` holds
    ``api.tenant.hash_api_key(key)`` of each key that belongs to the tenant (never the key
    itself); ``key_models`` narrows the models of some of those keys (by hash).
    """

    name: str
    api_key_sha256: Sequence[str]
    models: frozenset[str] = frozenset()
    requests_per_minute: int = 0
    tokens_per_minute: int = 0
    key_models: Mapping[str, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class GatewayConfig:
    """How the gateway protects itself and its replicas.

    With no tenants, the gateway is open (no API key needed), as on a laptop. With tenants,
    every request needs ``Authorization: Bearer <key>``.
    """

    tenants: Sequence[TenantConfig] = ()
    max_body_bytes: int = 4 * 1024 * 1024
    body_timeout_s: float = 30.0
    """Longest a client may take to send a request body; then 408 and the connection closes."""
    queue_max_per_model: int = 1024
    """Requests a model may hold waiting for a replica or a free slot; beyond it, 429."""
    max_in_flight_per_replica: int = 256
    """Requests the gateway sends one replica at once; more wait in the model's queue."""
    activation_timeout_s: float = 300.0
    """How long a queued request may wait for a ready replica before a 503."""
    upstream_connect_timeout_s: float = 5.0
    upstream_read_timeout_s: float = 300.0
    """Longest silence from a replica mid-response before the request fails (never hangs)."""
    retries: int = 2
    """Extra replicas tried when a replica fails before any response byte reached the client."""
    default_max_tokens: int = 256
    """Generated tokens assumed for routing when a request sets no ``max_tokens``."""
    prefix_block_chars: int = 256
    """Prompt characters per prefix block hashed for prefix-affinity routing (~64 tokens)."""
    prefix_affinity_blocks: int = 4
    """Leading blocks that decide a request's place on the hash ring."""
    failed_endpoint_cooldown_s: float = 10.0
    """How long a replica that failed before answering is skipped by routing (unless no other
    is left): longer than Kubernetes takes to drop a dead pod from its EndpointSlice (three
    failed 1 s readiness probes, then the slice update), so a dead endpoint costs one retry."""
    drift: DriftSettings = field(default_factory=DriftSettings)
    """Window sizes and stated false-alarm rate of drift detection (``policy.drift``)."""
    otlp_endpoint: str | None = None
    """OTLP/HTTP collector (base URL) that gets one span per request; None: no tracing."""
    trace_content: bool = False
    """Whether spans carry request and response bodies (user data; off by default)."""

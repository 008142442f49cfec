"""Prometheus metrics of one server (a registry per app, so tests can build many apps)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)


class ServerMetrics:
    """Requests, tokens, time to first token, inter-token latency and end-to-end latency."""

    def __init__(self, unfinished_requests: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("nexus_k_requests", "API requests by endpoint and HTTP status",
                                ["endpoint", "status"], registry=self.registry)
        self.prompt_tokens = Counter("nexus_k_prompt_tokens", "Prompt tokens processed", registry=self.registry)
        self.completion_tokens = Counter("nexus_k_completion_tokens", "Completion tokens generated",
                                         registry=self.registry)
        self.time_to_first_token = Histogram("nexus_k_time_to_first_token_seconds", "Time to first token",
                                             buckets=LATENCY_BUCKETS, registry=self.registry)
        self.inter_token_latency = Histogram("nexus_k_inter_token_latency_seconds", "Time between output tokens",
                                             buckets=LATENCY_BUCKETS, registry=self.registry)
        self.request_latency = Histogram("nexus_k_request_latency_seconds", "End-to-end request latency",
                                         ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.unfinished = Gauge("nexus_k_engine_unfinished_requests", "Requests the engine still holds",
                                registry=self.registry)
        self.unfinished.set_function(lambda: float(unfinished_requests()))
        self.aborted = Counter("nexus_k_engine_aborted_requests",
                               "Engine requests aborted before they finished (client gone, error, stop)",
                               registry=self.registry)

    def count_tokens(self, prompt: int, completion: int) -> None:
        """Add a finished request's token counts."""
        self.prompt_tokens.inc(prompt)
        self.completion_tokens.inc(completion)

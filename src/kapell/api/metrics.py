"""Prometheus metric names: the one place they are spelled.

Engine metrics use vLLM's names, so every engine kapell runs (and vLLM itself) is read the
same way by the gateway, the autoscaler and the energy accounting.
"""

from __future__ import annotations

ENGINE_REQUESTS_RUNNING = "vllm:num_requests_running"
ENGINE_REQUESTS_WAITING = "vllm:num_requests_waiting"
ENGINE_PROMPT_TOKENS = "vllm:prompt_tokens_total"
ENGINE_GENERATION_TOKENS = "vllm:generation_tokens_total"
ENGINE_TTFT_SECONDS = "vllm:time_to_first_token_seconds"
ENGINE_TPOT_SECONDS = "vllm:time_per_output_token_seconds"
ENGINE_E2E_SECONDS = "vllm:e2e_request_latency_seconds"
ENGINE_REQUEST_SUCCESS = "vllm:request_success_total"
ENGINE_KV_CACHE_USAGE = "vllm:gpu_cache_usage_perc"
ENGINE_PREFIX_CACHE_HITS = "vllm:prefix_cache_hits_total"
ENGINE_PREFIX_CACHE_QUERIES = "vllm:prefix_cache_queries_total"
ENGINE_BATCH_SIZE = "kapell_engine_batch_size"  # sequences per decode step (kapell engines)

GATEWAY_REQUESTS = "kapell_gateway_requests_total"
GATEWAY_UPSTREAM_RETRIES = "kapell_gateway_upstream_retries_total"
GATEWAY_PROMPT_TOKENS = "kapell_gateway_prompt_tokens_total"
GATEWAY_GENERATED_TOKENS = "kapell_gateway_generated_tokens_total"
GATEWAY_TTFT_SECONDS = "kapell_gateway_time_to_first_token_seconds"
GATEWAY_E2E_SECONDS = "kapell_gateway_request_duration_seconds"
GATEWAY_QUEUE_DEPTH = "kapell_gateway_queue_depth"
GATEWAY_IN_FLIGHT = "kapell_gateway_requests_in_flight"
GATEWAY_REPLICAS_DESIRED = "kapell_model_replicas_desired"
GATEWAY_REPLICAS_READY = "kapell_model_replicas_ready"
GATEWAY_REQUEST_ENERGY_JOULES = "kapell_gateway_request_energy_joules"

MODEL_ENERGY_JOULES = "kapell_model_energy_joules"
MODEL_JOULES_PER_REQUEST = "kapell_model_joules_per_request"
MODEL_JOULES_PER_1K_TOKENS = "kapell_model_joules_per_1k_tokens"

OPERATOR_RECONCILE_SECONDS = "kapell_operator_reconcile_seconds"
OPERATOR_API_WRITES = "kapell_operator_api_writes_total"

SPEND_TOKENS_IN = "kapell_spend_prompt_tokens"
SPEND_TOKENS_OUT = "kapell_spend_generated_tokens"
SPEND_GPU_SECONDS = "kapell_spend_gpu_seconds"
SPEND_JOULES = "kapell_spend_joules"
SPEND_GRAMS_CO2 = "kapell_spend_grams_co2"
BUDGET_OVER = "kapell_budget_over"

PROMPT_REQUESTS = "kapell_prompt_requests_total"
PROMPT_ERRORS = "kapell_prompt_errors_total"
PROMPT_DURATION_SECONDS = "kapell_prompt_request_duration_seconds"
PROMPT_PROMPT_TOKENS = "kapell_prompt_prompt_tokens_total"
PROMPT_GENERATED_TOKENS = "kapell_prompt_generated_tokens_total"
PROMPT_FEEDBACK = "kapell_prompt_feedback_total"
PROMPT_VERSION_WEIGHT = "kapell_prompt_version_weight_percent"
DRIFT_PSI = "kapell_drift_psi"
DRIFT_PSI_THRESHOLD = "kapell_drift_psi_threshold"
DRIFT_SHIFT_RATIO = "kapell_drift_shift_ratio"
DRIFT_DRIFTING = "kapell_drift_drifting"
DRIFT_WINDOW_REQUESTS = "kapell_drift_window_requests"
DRIFT_WINDOWS_COMPARED = "kapell_drift_windows_compared_total"
DRIFT_FALSE_ALARM_RATE = "kapell_drift_false_alarm_rate"

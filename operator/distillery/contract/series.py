"""The Prometheus series each stage process exports: named once, read by the operator and the dashboards.

Each stage registers these in its own registry (`generation|training|evaluation/metrics.py`); the
operator reads some of them from the running pods' /metrics (`controller/progress.py`), and the
dashboards (`hack/dashboards.py`) query them. A counter is named here with its `_total`, as
exported. The process's own `process_*` series are not listed.
"""

from __future__ import annotations

# ------------------------------------------------------------------ generation (`distillery generate`)

GENERATION_REQUESTS = "distillery_generation_requests_total"
GENERATION_REQUEST_DURATION = "distillery_generation_request_duration_seconds"
GENERATION_TOKENS = "distillery_generation_tokens_total"
GENERATION_RECORDS = "distillery_generation_records_total"
GENERATION_REJECTED = "distillery_generation_rejected_total"
GENERATION_IN_FLIGHT = "distillery_generation_in_flight_requests"
# A shard's position (gauges, an earlier run of the shard included): the operator sums them over the
# running shards for status.progress and `kubectl get dj`.
GENERATION_PROMPTS = "distillery_generation_prompts"
GENERATION_PROMPTS_DONE = "distillery_generation_prompts_done"
GENERATION_RECORDS_ACCEPTED = "distillery_generation_records_accepted"
GENERATION_OUTPUT_TOKENS_PER_SECOND = "distillery_generation_output_tokens_per_second"

# ------------------------------------------------------------------ training (`distillery train`)

TRAIN_LOSS = "distillery_train_loss"
TRAIN_VALIDATION_LOSS = "distillery_train_validation_loss"
TRAIN_STEP = "distillery_train_step"
TRAIN_STEPS = "distillery_train_steps"
TRAIN_EPOCH = "distillery_train_epoch"
TRAIN_TOKENS = "distillery_train_tokens_total"
TRAIN_TOKENS_PER_SECOND = "distillery_train_tokens_per_second"
TRAIN_ON_POLICY_LOSS = "distillery_train_on_policy_loss"
TRAIN_TEACHER_GRADED_TOKENS = "distillery_train_teacher_graded_tokens_total"

# ------------------------------------------------------------------ evaluation (`distillery evaluate`)

EVAL_SCORE = "distillery_eval_score"
EVAL_LATENCY = "distillery_eval_latency_seconds"
EVAL_THROUGHPUT = "distillery_eval_output_tokens_per_second"
EVAL_MODELS_COMPARED = "distillery_eval_models_compared"
EVAL_MODELS_DONE = "distillery_eval_models_done"
EVAL_BENCHMARK_SCORE = "distillery_eval_benchmark_score"

# ------------------------------------------------------------------ the teacher (vLLM's own /metrics)

# vLLM names these (vllm/v1/metrics/loggers.py, PrometheusStatLogger; labels model_name and engine);
# the chart's teacher PodMonitor scrapes them and the dashboards read them. A test checks each name
# against the installed vLLM.
TEACHER_KV_CACHE_USAGE = "vllm:kv_cache_usage_perc"  # 0-1
TEACHER_REQUESTS_WAITING = "vllm:num_requests_waiting"
TEACHER_REQUESTS_RUNNING = "vllm:num_requests_running"
TEACHER_GENERATION_TOKENS = "vllm:generation_tokens_total"
TEACHER_PROMPT_TOKENS = "vllm:prompt_tokens_total"
TEACHER = (
    TEACHER_KV_CACHE_USAGE,
    TEACHER_REQUESTS_WAITING,
    TEACHER_REQUESTS_RUNNING,
    TEACHER_GENERATION_TOKENS,
    TEACHER_PROMPT_TOKENS,
)

# Every series of each stage process, by the stage's command name.
BY_STAGE = {
    "generate": (
        GENERATION_REQUESTS,
        GENERATION_REQUEST_DURATION,
        GENERATION_TOKENS,
        GENERATION_RECORDS,
        GENERATION_REJECTED,
        GENERATION_IN_FLIGHT,
        GENERATION_PROMPTS,
        GENERATION_PROMPTS_DONE,
        GENERATION_RECORDS_ACCEPTED,
        GENERATION_OUTPUT_TOKENS_PER_SECOND,
    ),
    "train": (
        TRAIN_LOSS,
        TRAIN_VALIDATION_LOSS,
        TRAIN_STEP,
        TRAIN_STEPS,
        TRAIN_EPOCH,
        TRAIN_TOKENS,
        TRAIN_TOKENS_PER_SECOND,
        TRAIN_ON_POLICY_LOSS,
        TRAIN_TEACHER_GRADED_TOKENS,
    ),
    "evaluate": (
        EVAL_SCORE,
        EVAL_LATENCY,
        EVAL_THROUGHPUT,
        EVAL_MODELS_COMPARED,
        EVAL_MODELS_DONE,
        EVAL_BENCHMARK_SCORE,
    ),
}

"""The operator's settings: one validated, frozen object, built once at startup and passed down.

`distillery operator` (controller/main.py) builds `OperatorSettings` from its environment (set by
the chart's Deployment, templates/deployment.yaml) and its command line (the chart's `args`), then
hands it to the handlers, which give it to the Reconciler (and through it to the builders'
`BuildConfig`, the guard and the price table), the work queue, the progress scraper, leader
election and the HTTP server. Nothing else in the operator reads the environment.

Every setting is a field below, documented once: its environment variable (or command-line flag),
its chart value, its default and its range. A value that does not fit stops the operator before it
connects, with one line naming the variable and the chart value and saying what was expected.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from distillery.api.kube_types import image_problem
from distillery.api.pods import PodSettings
from distillery.contract.cost import parse_prices
from distillery.controller.guard import Guard
from distillery.controller.ratelimit import TokenBucket
from distillery.manifests.common import BuildConfig


def setting(
    default: Any,
    description: str,
    *,
    chart: str,
    expected: str,
    env: str | None = None,
    flag: str | None = None,
    **limits: Any,
) -> Any:
    """A field with where it comes from (`env` or `flag`), its chart value and what a valid value is."""
    extra = {"env": env, "flag": flag, "chart": chart, "expected": expected}
    return Field(default, description=description, json_schema_extra=extra, **limits)


class OperatorSettings(BaseModel):
    """What `distillery operator` runs with (defaults: the operator run alone, outside the chart)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # ---------------------------------------------------------------- the pods it builds
    worker_image: str = setting(
        BuildConfig.worker_image,
        "Image of the check / generate / train / evaluate pods on CPU (a stage's `image` overrides it).",
        env="DISTILLERY_WORKER_IMAGE",
        chart="workers.image",
        expected="a container image reference",
    )
    worker_cuda_image: str = setting(
        BuildConfig.worker_cuda_image,
        "Image of the stage pods that ask for GPUs (a stage's `image` overrides it).",
        env="DISTILLERY_WORKER_CUDA_IMAGE",
        chart="workers.cudaImage",
        expected="a container image reference",
    )
    gpu_hour_prices: str = setting(
        "",
        "Price per GPU-hour by GPU type (`default=2.5,NVIDIA-H100-80GB-HBM3=4.1`); empty: no money shown.",
        env="DISTILLERY_GPU_HOUR_PRICES",
        chart="cost.gpuHourPrices",
        expected="TYPE=PRICE,... with prices >= 0",
    )
    currency: str = setting(
        "USD",
        "Currency of those prices, as shown in status.cost and the report.",
        env="DISTILLERY_CURRENCY",
        chart="cost.currency",
        expected="a currency name of 1 to 16 characters",
        min_length=1,
        max_length=16,
    )

    pod_defaults: PodSettings = setting(
        PodSettings(),
        "What every pod the operator creates gets unless its job's section says otherwise (a JSON object: "
        "imagePullSecrets, serviceAccountName, priorityClassName, runtimeClassName, affinity, nodeSelector, "
        "tolerations, labels, annotations; merge rules in api.kube_types.PodSettings).",
        env="DISTILLERY_POD_DEFAULTS",
        chart="podDefaults",
        expected="a JSON object of pod settings",
    )
    scraper_namespace: str = setting(
        "",
        "Namespace of the Prometheus that may scrape the teachers' vLLM /metrics (their NetworkPolicy admits "
        "it); empty: none.",
        env="DISTILLERY_SCRAPER_NAMESPACE",
        chart="metrics.scraper.namespace",
        expected="a namespace name",
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$",
        max_length=63,
    )
    scraper_pod_labels: str = setting(
        "",
        "Labels (`key=value,...`) of that Prometheus's pods; empty: any pod of its namespace.",
        env="DISTILLERY_SCRAPER_POD_LABELS",
        chart="metrics.scraper.podLabels",
        expected="key=value label pairs, comma-separated",
        pattern=r"^([A-Za-z0-9][-A-Za-z0-9_./]*=[-A-Za-z0-9_.]*(,[A-Za-z0-9][-A-Za-z0-9_./]*=[-A-Za-z0-9_.]*)*)?$",
    )

    # ---------------------------------------------------------------- the guard (controller/guard.py)
    guard_image_prefixes: tuple[str, ...] = setting(
        (),
        "Images the jobs' pods may run, by prefix, comma-separated; empty: any image.",
        env="DISTILLERY_GUARD_IMAGE_PREFIXES",
        chart="operator.guard.allowedImagePrefixes",
        expected="image prefixes, comma-separated",
    )
    guard_secret_label: str = setting(
        "",
        "Label (`key=value` or `key`) a Secret needs before a job may name it; empty: any Secret.",
        env="DISTILLERY_GUARD_SECRET_LABEL",
        chart="operator.guard.secretLabel",
        expected="a label key, or key=value",
        pattern=r"^([A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?(=[-A-Za-z0-9_.]*)?)?$",
    )
    guard_toleration_keys: tuple[str, ...] | None = setting(
        None,
        "Taint keys the jobs' pods may tolerate, comma-separated; set but empty: none; unset: any.",
        env="DISTILLERY_GUARD_TOLERATION_KEYS",
        chart="operator.guard.allowedTolerationKeys",
        expected="taint keys, comma-separated",
    )

    # ---------------------------------------------------------------- the control loop
    resync_seconds: float = setting(
        300.0,
        "Every job is reconciled this often even if nothing happened to it (a missed watch event's net).",
        env="DISTILLERY_RESYNC_SECONDS",
        chart="operator.resyncSeconds",
        expected="seconds, a number from 1 to 86400",
        ge=1,
        le=86400,
    )
    workers: int = setting(
        16,
        "Reconciles waiting on the API server at once.",
        env="DISTILLERY_WORKERS",
        chart="operator.reconcileWorkers",
        expected="a whole number from 1 to 256",
        ge=1,
        le=256,
    )
    progress_seconds: float = setting(
        15.0,
        "How often the running stage pods' /metrics are read for live progress in status.",
        env="DISTILLERY_PROGRESS_SECONDS",
        chart="operator.progressSeconds",
        expected="seconds, a number from 0.1 to 3600",
        ge=0.1,
        le=3600,
    )

    api_qps: float = setting(
        100.0,
        "Writes a second to the Kubernetes API the operator keeps to once its burst is spent (creates, patches, "
        "deletes, Events; a client-side token bucket, as client-go's QPS); 0: no limit. Reads and the leader "
        "election's Lease are not limited.",
        env="DISTILLERY_API_QPS",
        chart="operator.apiWriteQPS",
        expected="writes per second, a number from 0 (no limit) to 100000",
        ge=0,
        le=100000,
    )
    api_burst: int = setting(
        200,
        "Writes the operator may make at once, above its QPS, after a quiet spell (client-go's Burst).",
        env="DISTILLERY_API_BURST",
        chart="operator.apiWriteBurst",
        expected="a whole number from 1 to 100000",
        ge=1,
        le=100000,
    )

    # ---------------------------------------------------------------- the process (command-line flags)
    metrics_port: int = setting(
        8080,
        "Port of /metrics, /healthz and /readyz; 0: no HTTP server.",
        flag="--metrics-port",
        chart="operator.metricsPort",
        expected="a port from 0 to 65535",
        ge=0,
        le=65535,
    )
    namespaces: tuple[str, ...] = setting(
        (),
        "Namespaces watched; empty: every namespace.",
        flag="--namespace",
        chart="operator.watchNamespaces",
        expected="namespace names",
    )
    leader_elect: str = setting(
        "",
        "Lease for leader election among replicas; empty: the operator runs alone.",
        flag="--leader-elect",
        chart="operator.leaderElection.name",
        expected="a Lease name",
        pattern=r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$",
        max_length=253,
    )
    leader_election_namespace: str = setting(
        "",
        "Namespace of the Lease; empty: the pod's own (POD_NAMESPACE), else `default`.",
        flag="--leader-election-namespace",
        chart="operator.extraArgs",
        expected="a namespace name",
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$",
        max_length=63,
    )
    pod_namespace: str = setting(
        "",
        "The operator pod's namespace (the Lease's, by default).",
        env="POD_NAMESPACE",
        chart="(set by the chart from the pod's metadata.namespace)",
        expected="a namespace name",
    )
    pod_name: str = setting(
        "",
        "The operator pod's name, this replica's name in the Lease (default: the host name).",
        env="POD_NAME",
        chart="(set by the chart from the pod's metadata.name)",
        expected="a pod name",
    )

    @field_validator("worker_image", "worker_cuda_image")
    @classmethod
    def _image(cls, value: str) -> str:
        problem = image_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("gpu_hour_prices")
    @classmethod
    def _prices(cls, value: str) -> str:
        parse_prices(value)  # its ValueError says what is wrong
        return value

    # ---------------------------------------------------------------- what the parts get

    def prices(self) -> dict[str, float]:
        return parse_prices(self.gpu_hour_prices)

    def build_config(self) -> BuildConfig:
        """What the manifest builders need."""
        return BuildConfig(
            worker_image=self.worker_image,
            worker_cuda_image=self.worker_cuda_image,
            gpu_hour_prices=self.gpu_hour_prices,
            currency=self.currency,
            pod_defaults=self.pod_defaults,
            scraper_namespace=self.scraper_namespace,
            scraper_pod_labels=self.scraper_pod_labels,
        )

    def write_limit(self) -> TokenBucket | None:
        """The token bucket the operator's API writes take from; None without a limit."""
        return TokenBucket(self.api_qps, self.api_burst) if self.api_qps > 0 else None

    def guard(self) -> Guard:
        return Guard(self.guard_image_prefixes, self.guard_secret_label, self.guard_toleration_keys)

    def lease_namespace(self) -> str:
        return self.leader_election_namespace or self.pod_namespace or "default"

    @classmethod
    def source(cls, field: str) -> str:
        """Where a field is set: its environment variable or flag, and its chart value."""
        extra = cls.model_fields[field].json_schema_extra
        where = extra["chart"] if extra["chart"].startswith("(") else f"(chart value {extra['chart']})"
        return f"{extra['env'] or extra['flag']} {where}"

    @classmethod
    def env_names(cls) -> dict[str, str]:
        """Field -> environment variable, for the fields set from the environment."""
        fields = cls.model_fields.items()
        return {name: info.json_schema_extra["env"] for name, info in fields if info.json_schema_extra["env"]}


class SettingsError(ValueError):
    """Settings the operator cannot start with: one line per bad value."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


# Fields read as comma-separated lists; of them, those where a set but empty variable means "none".
_LISTS = {"guard_image_prefixes", "guard_toleration_keys", "namespaces"}
_EMPTY_IS_NONE_ALLOWED = {"guard_toleration_keys"}
# Fields read as a JSON object.
_JSON = {"pod_defaults"}


def from_environment(env: Mapping[str, str] | None = None, **flags: Any) -> OperatorSettings:
    """The settings from the environment (None: this process's; the only read of it in the operator)
    and the command line (`flags`, by field name; None: not given). Raises SettingsError naming every
    bad value's variable and chart value."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    bad_json: list[str] = []
    for field, variable in OperatorSettings.env_names().items():
        text = env.get(variable)
        if text is None:
            continue
        text = text.strip()
        if field in _JSON:
            if text:
                try:
                    value = json.loads(text)
                    # The chart renders every key; an empty one ("", {}, [], null) is left out.
                    empty = ("", None, [], {})
                    raw[field] = (
                        {k: v for k, v in value.items() if v not in empty}
                        if isinstance(value, dict)
                        else value
                    )
                except json.JSONDecodeError as error:
                    bad_json.append(f"{OperatorSettings.source(field)}: expected a JSON object ({error})")
        elif field in _LISTS:
            if text or field in _EMPTY_IS_NONE_ALLOWED:
                raw[field] = tuple(item.strip() for item in text.split(",") if item.strip())
        elif text:  # set but empty: the default, as the chart leaves a value out
            raw[field] = text
    raw.update({field: value for field, value in flags.items() if value is not None})
    try:
        settings = OperatorSettings(**raw)
    except ValidationError as error:
        raise SettingsError(bad_json + [_problem(e, raw) for e in error.errors()]) from None
    if bad_json:
        raise SettingsError(bad_json)
    return settings


def _problem(error: Any, raw: dict[str, Any]) -> str:
    field = str(error["loc"][0]) if error["loc"] else ""
    if field not in OperatorSettings.model_fields:
        return f"operator settings: {error['msg']}"
    if field in _JSON:  # a field inside the object: its path (camelCase, as in the chart) and what is wrong
        path = ".".join(str(part) for part in error["loc"][1:])
        message = str(error["ctx"]["error"]) if error["type"] == "value_error" else error["msg"]
        return f"{OperatorSettings.source(field)}: {path + ': ' if path else ''}{message}"
    if error["type"] == "value_error":  # a validator's own words, naming the value
        return f"{OperatorSettings.source(field)}: {error['ctx']['error']}"
    expected = OperatorSettings.model_fields[field].json_schema_extra["expected"]
    return f"{OperatorSettings.source(field)}: expected {expected} (got {raw.get(field)!r})"

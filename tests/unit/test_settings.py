"""The operator's settings: one validated object, built once by `distillery operator`, passed down.

Each bad value is refused naming its variable (or flag) and chart value; the settings a Reconciler
is given reach the pods it builds, whatever the environment says; importing the operator reads
no environment; the chart sets exactly the variables the settings read.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from distillery.controller.cache import Cache
from distillery.controller.reconcile import Reconciler
from distillery.controller.settings import OperatorSettings, SettingsError, from_environment

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
OPERATOR = ROOT / "operator" / "distillery"

# A bad value of every setting that has a range or a form: (field, value as the chart or CLI gives it).
BAD: dict[str, str | int] = {
    "worker_image": "Registry/Worker Image",
    "worker_cuda_image": "cuda image:1",
    "gpu_hour_prices": "H100",
    "currency": "a-currency-name-far-too-long",
    "guard_secret_label": "not a label",
    "resync_seconds": "0",
    "workers": "sixteen",
    "progress_seconds": "-1",
    "metrics_port": 70000,
    "leader_elect": "Not_A_Lease",
    "leader_election_namespace": "Bad.Namespace",
    "scraper_namespace": "Monitoring",
    "scraper_pod_labels": "app=prometheus,nolabel",
}


def _given(field: str, value: str | int) -> dict[str, Any]:
    """`from_environment`'s arguments that set `field` to `value`, as the operator would get it."""
    variable = OperatorSettings.env_names().get(field)
    return {"env": {variable: value}} if variable else {"env": {}, field: value}


@pytest.mark.parametrize("field", BAD)
def test_each_bad_value_is_refused_naming_its_variable_and_chart_value(field: str):
    args = _given(field, BAD[field])
    with pytest.raises(SettingsError) as refused:
        from_environment(**args)
    (problem,) = refused.value.problems
    extra = OperatorSettings.model_fields[field].json_schema_extra
    assert problem.startswith(f"{extra['env'] or extra['flag']} (chart value {extra['chart']}): "), problem
    assert "expected" in problem and repr(str(BAD[field])).strip("'") in problem, problem


def test_every_setting_says_where_it_comes_from_what_it_means_and_its_default():
    for name, info in OperatorSettings.model_fields.items():
        extra = info.json_schema_extra
        assert bool(extra["env"]) != bool(extra["flag"]), name  # exactly one source
        assert extra["chart"] and extra["expected"] and info.description, name
    OperatorSettings()  # the defaults are valid
    assert from_environment({}) == OperatorSettings()


def test_values_are_read_as_the_chart_writes_them():
    settings = from_environment(
        {
            "DISTILLERY_RESYNC_SECONDS": "30",
            "DISTILLERY_WORKERS": "4",
            "DISTILLERY_GUARD_TOLERATION_KEYS": "",  # set but empty: no toleration allowed
            "DISTILLERY_GUARD_IMAGE_PREFIXES": " a/ ,b/",
            "DISTILLERY_CURRENCY": "",  # empty: the default
            "POD_NAMESPACE": "ops",
        },
        namespaces=["ml", "ml2"],
        leader_elect="distillery",
    )
    assert (settings.resync_seconds, settings.workers, settings.currency) == (30.0, 4, "USD")
    assert settings.guard_toleration_keys == () and settings.guard_image_prefixes == ("a/", "b/")
    assert settings.namespaces == ("ml", "ml2") and settings.lease_namespace() == "ops"
    with pytest.raises(ValueError):
        settings.workers = 5  # frozen: what main built is what every part runs with


def test_the_operator_refuses_to_start_naming_the_variable(monkeypatch, caplog):
    from distillery import cli

    monkeypatch.setenv("DISTILLERY_WORKERS", "0")
    assert cli.main(["operator", "--metrics-port", "0"]) == 2
    (line,) = [r.getMessage() for r in caplog.records if r.name == "distillery.operator"]
    assert line == (
        "DISTILLERY_WORKERS (chart value operator.reconcileWorkers): expected a whole number from 1 to 256 (got '0')"
    )


# ---------------------------------------------------------------- no environment below main


def test_importing_the_operator_reads_no_environment():
    """With every variable set to nonsense, importing the handlers (and main, the builders) works
    and makes nothing: the settings are built, and checked, only when `distillery operator` runs."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "operator")}
    env.update({variable: "not a valid value ,=" for variable in OperatorSettings.env_names().values()})
    code = (
        "from distillery.controller import handlers, main; import distillery.manifests; "
        "assert handlers.runtime is None; print('imported')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "imported" in result.stdout, result.stderr


def test_nothing_below_main_reads_the_environment():
    readers = re.compile(r"\bos\.environ\b|\bgetenv\b|\benviron\b")
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for folder in ("controller", "manifests")
        for path in sorted((OPERATOR / folder).glob("*.py"))
        if path.name != "settings.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if readers.search(line)
    ]
    assert found == []


# ---------------------------------------------------------------- the settings reach the builders


class RecordingApi:
    """Answers every request with an empty object and keeps what was created."""

    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []

    async def request(self, method: str, url: str, body: Any = None, *args: Any, **kwargs: Any) -> dict:
        if method == "POST" and isinstance(body, dict) and body.get("kind") not in (None, "Event"):
            self.created.append(body)
        return {}


@pytest.mark.asyncio
async def test_settings_given_to_the_reconciler_reach_the_pods_it_builds(monkeypatch):
    monkeypatch.setenv("DISTILLERY_WORKER_IMAGE", "env.example/not-this-one:1")
    settings = OperatorSettings(worker_image="settings.example/worker:7")
    cache, api = Cache(), RecordingApi()
    spec = {
        "teacher": {"model": "models/teacher", "gpus": 0},
        "student": {"model": "models/student"},
        "data": {"taskType": "qa", "train": "data/train.jsonl", "validation": "data/validation.jsonl"},
        "storage": {"pvc": {"size": "1Gi"}},
    }
    metadata = {"name": "j", "namespace": "ml", "uid": "u-1", "generation": 1}
    cache.put_job(
        {
            "apiVersion": "distillery.dev/v1alpha1",
            "kind": "DistillationJob",
            "metadata": metadata,
            "spec": spec,
        }
    )
    await Reconciler(cache, api, settings=settings)(("ml", "j"))
    images = {
        c["image"]
        for body in api.created
        if body["kind"] == "Job"
        for c in body["spec"]["template"]["spec"]["containers"]
    }
    assert images == {"settings.example/worker:7"}, api.created


# ---------------------------------------------------------------- the chart sets what the settings read


def test_the_chart_sets_the_variables_and_flags_the_settings_read():
    from tests.support.chart import FULL_VALUES, find, render

    (container,) = find(render(files=(str(FULL_VALUES),)), "Deployment")["spec"]["template"]["spec"][
        "containers"
    ]
    extra = {
        e["name"]
        for e in yaml.safe_load((ROOT / "charts/distillery/ci/full-values.yaml").read_text())["operator"][
            "extraEnv"
        ]
    }
    assert {e["name"] for e in container["env"]} - extra == set(OperatorSettings.env_names().values())
    flags = {info.json_schema_extra["flag"] for info in OperatorSettings.model_fields.values()}
    given = {arg.split("=", 1)[0] for arg in container["args"] if arg.startswith("--")} - {"--verbose"}
    assert given <= flags, given - flags
    values = yaml.safe_load((ROOT / "charts/distillery/values.yaml").read_text())
    for name, info in OperatorSettings.model_fields.items():
        chart = info.json_schema_extra["chart"]
        if chart.startswith("("):
            continue
        node = values
        for key in chart.split("."):
            assert isinstance(node, dict) and key in node, (
                f"{name}: chart value {chart} is not in values.yaml"
            )
            node = node[key]

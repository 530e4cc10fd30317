"""Training on several nodes (`training.nodes`): the Indexed Job and the headless Service the builders make,
the torchrun command line each pod runs, the spec rules, and the cost of every node's GPUs."""

from __future__ import annotations

import copy
import re

import pytest

from distillery.contract.commands import RENDEZVOUS_ENDPOINT_ENV, RENDEZVOUS_PORT
from distillery.errors import InvalidJob, parse_job
from distillery.manifests import BuildConfig, build, build_training_service, names
from tests.support.manifest_cases import multinode_job, tiny_job
from tests.support.pods import container_of, expand, literal_env

pytestmark = pytest.mark.unit
CONFIG = BuildConfig()


def _flag(argv: list[str], name: str) -> str | None:
    return next((a.split("=", 1)[1] for a in argv if a.startswith(name + "=")), None)


def test_several_nodes_are_an_indexed_job_of_every_pod_at_once():
    job = multinode_job()
    spec = build("train", job, CONFIG)["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == job.spec.training.nodes == 2
    # One lost pod fails its peer too: the limit counts restarts of the whole group.
    assert spec["backoffLimit"] == job.spec.training.backoff_limit * 2
    # Kueue's Job integration admits the Job's pods as one workload: the gang together, or none.
    assert spec["suspend"] is True and job.spec.queue_name
    # Pod 0's DNS name: the Job names the pod's host <job>-<index>, the Service is its subdomain.
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == build("train-service", job, CONFIG)["metadata"]["name"]


def test_every_pod_runs_torchrun_meeting_at_pod_0():
    job = multinode_job()
    manifest = build("train", job, CONFIG)
    container = container_of(manifest)
    env = literal_env(container)
    argv = [expand(a, env) for a in container["command"] + container["args"]]
    assert argv[0] == "torchrun"
    assert _flag(argv, "--nnodes") == "2"
    assert _flag(argv, "--nproc_per_node") == str(job.spec.training.gpus)
    assert _flag(argv, "--rdzv_backend") == "c10d"
    # Every $(VAR) the args name is in the container's env (the kubelet leaves an unknown one as written).
    assert not re.search(r"\$\(", " ".join(argv)), argv
    host, port = _flag(argv, "--rdzv_endpoint").rsplit(":", 1)
    train = names(job).train
    pod_zero = f"{manifest['metadata']['name']}-0"  # what an Indexed Job names pod 0's host
    assert host == f"{pod_zero}.{train}" and int(port) == RENDEZVOUS_PORT
    assert {"name": "rendezvous", "containerPort": RENDEZVOUS_PORT, "protocol": "TCP"} in container["ports"]
    assert RENDEZVOUS_ENDPOINT_ENV in env


def test_the_headless_service_selects_exactly_the_training_pods():
    job = multinode_job()
    service = build_training_service(job)
    spec = service["spec"]
    assert spec["clusterIP"] == "None"
    # Pods resolve before they are ready (they have no readiness probe): torchrun meets at start.
    assert spec["publishNotReadyAddresses"] is True
    train_pods = build("train", job, CONFIG)["spec"]["template"]["metadata"]["labels"]
    assert spec["selector"].items() <= train_pods.items()
    for other in ("generate", "evaluate", "check"):
        labels = build(other, job, CONFIG)["spec"]["template"]["metadata"]["labels"]
        assert not spec["selector"].items() <= labels.items(), other
    teacher = build("teacher", job, CONFIG)["spec"]["template"]["metadata"]["labels"]
    assert not spec["selector"].items() <= teacher.items()
    assert spec["ports"][0]["port"] == RENDEZVOUS_PORT


def test_one_node_is_the_single_pod_job_with_no_service():
    job = tiny_job()
    spec = build("train", job, CONFIG)["spec"]
    assert (spec["completions"], spec["parallelism"]) == (1, 1)
    assert "completionMode" not in spec and "subdomain" not in spec["template"]["spec"]
    assert spec["backoffLimit"] == job.spec.training.backoff_limit
    assert build("train-service", job, CONFIG) is None
    assert RENDEZVOUS_ENDPOINT_ENV not in literal_env(container_of(build("train", job, CONFIG)))


def _document(**training) -> dict:
    document = multinode_job().model_dump(mode="json", by_alias=True, exclude_none=True)
    document = copy.deepcopy(document)
    document["spec"]["training"].update(training)
    return document


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"nodes": 0}, "spec.training.nodes"),
        ({"nodes": 65}, "spec.training.nodes"),
        ({"nodes": 2, "method": "onPolicy"}, "spec.training.nodes"),
    ],
)
def test_nodes_out_of_range_or_on_policy_are_refused_naming_the_field(change, field):
    with pytest.raises(InvalidJob) as error:
        parse_job(_document(**change))
    assert [p for p in error.value.problems if p.path == field], error.value.problems


def test_several_nodes_need_a_claim_every_node_can_mount():
    document = _document(nodes=2)
    document["spec"]["storage"]["pvc"] = {"size": "1Ti", "accessModes": ["ReadWriteOnce"]}
    with pytest.raises(InvalidJob) as error:
        parse_job(document)
    (problem,) = [p for p in error.value.problems if p.path == "spec.training.nodes"]
    assert "ReadWriteMany" in problem.message
    document["spec"]["storage"]["pvc"]["accessModes"] = ["ReadWriteMany"]
    assert parse_job(document).spec.training.nodes == 2


def test_the_training_costs_every_nodes_gpus():
    training = multinode_job().spec.training
    assert training.all_gpus == training.gpus * training.nodes == 16
    assert tiny_job().spec.training.all_gpus == tiny_job().spec.training.gpus

"""Manifest builders: golden files, upstream schema validation (strict), names and invariants.

Regenerate the golden files after an intended change with
`DISTILLERY_UPDATE_GOLDEN=1 python -m pytest tests/unit/test_manifests.py`, then review the diff.
The switch is refused where `CI` is set: CI compares, it never rewrites (tests/CONTRACTS.md).

A golden file is written by the builder under test, so matching it proves only that nothing
changed. Each golden is therefore also checked on its own: against the upstream schemas, against
the port of the API server's validation (`tests/unit/apiserver.py`), and against properties
derived from the spec it was built from (`test_golden_file_says_what_its_spec_says`).
"""

from __future__ import annotations

import json
import os

import kubernetes_validate
import pytest
import yaml
from pydantic.alias_generators import to_camel

from distillery.api import DistillationJob, TrainingMethod
from distillery.manifests import (
    ALTERNATES,
    CHILDREN,
    BuildConfig,
    build,
    child_name,
    fit_name,
    label_value,
    names,
)
from distillery.manifests.common import JOB_LABEL, KUEUE_QUEUE_LABEL, MANAGED_BY, MANAGER
from tests.support import jobset_crd
from tests.support.manifest_cases import (
    CASES,
    CONFIG,
    GOLDEN,
    ROOT,
    UID,
    config_for,
    endpoint_job,
    gpu_job,
    onpolicy_job,
    podsettings_job,
    tiny_job,
)
from tests.unit import apiserver

pytestmark = pytest.mark.unit

K8S_VERSION = "1.31.0"


def update_golden_requested(env: dict[str, str] | os._Environ[str]) -> bool:
    """Whether to rewrite the golden files; refused (an error at collection) where CI is set."""
    if not env.get("DISTILLERY_UPDATE_GOLDEN"):
        return False
    if env.get("CI"):
        raise RuntimeError(
            "DISTILLERY_UPDATE_GOLDEN is set with CI set: CI compares the golden files with what the "
            "builders produce and never rewrites them. Regenerate them locally and commit the diff."
        )
    return True


UPDATE_GOLDEN = update_golden_requested(os.environ)


def _kinds(job: DistillationJob, config: BuildConfig = CONFIG) -> list[str]:
    """The children this job has: no teacher for an endpoint, no claim for an existing one, no Service
    for training on one node or as a JobSet. An alternate (a StatefulSet teacher, a JobSet) is built under
    the child it stands for (`build` resolves it), not under its own key."""
    served = job.spec.teacher.endpoint is None
    create_claim = job.spec.storage.pvc is not None and job.spec.storage.pvc.size is not None
    alternates = {alternate for alternate, _ in ALTERNATES.values()}
    return [
        child
        for child in CHILDREN
        if child not in alternates
        and (served or not child.startswith("teacher"))
        and (create_claim or child != "pvc")
        and (child != "train-service" or build(child, job, config) is not None)
    ]


def _children(job: DistillationJob, config: BuildConfig = CONFIG) -> dict[str, dict]:
    return {child: build(child, job, config) for child in _kinds(job, config)}


ALL = [(case, child) for case, make in CASES.items() for child in _kinds(make(), config_for(case))]


def _without_inline_job(manifest: dict, job: DistillationJob) -> dict:
    """The manifest with each inline `--job` JSON replaced by a marker, after checking it is this job.

    The JSON carries every spec default, so it changes whenever the API gains a field;
    the golden files would then churn for reasons that are not the builders'.
    """
    manifest = json.loads(json.dumps(manifest))
    for container in manifest["spec"].get("template", {}).get("spec", {}).get("containers", []):
        args = container.get("args", [])
        for index, arg in enumerate(args):
            if arg.startswith('{"apiVersion"'):
                assert DistillationJob.model_validate(json.loads(arg)).spec == job.spec
                args[index] = "<the job as inline JSON>"
    return manifest


@pytest.mark.parametrize(("case", "child"), ALL, ids=[f"{c}-{k}" for c, k in ALL])
def test_matches_golden_file(case: str, child: str):
    job = CASES[case]()
    manifest = _without_inline_job(build(child, job, config_for(case)), job)
    text = yaml.safe_dump(manifest, sort_keys=True, width=100)
    path = GOLDEN / case / f"{child}.yaml"
    if UPDATE_GOLDEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} is missing; run with DISTILLERY_UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(), (
        f"{path.relative_to(ROOT)} differs (DISTILLERY_UPDATE_GOLDEN=1 to update)"
    )


def test_golden_update_is_refused_in_ci():
    assert update_golden_requested({}) is False
    assert update_golden_requested({"CI": "true"}) is False
    assert update_golden_requested({"DISTILLERY_UPDATE_GOLDEN": "1"}) is True
    with pytest.raises(RuntimeError, match="never rewrites"):
        update_golden_requested({"DISTILLERY_UPDATE_GOLDEN": "1", "CI": "true"})


def _golden(case: str, child: str) -> dict:
    return yaml.safe_load((GOLDEN / case / f"{child}.yaml").read_text())


@pytest.mark.parametrize(("case", "child"), ALL, ids=[f"{c}-{k}" for c, k in ALL])
def test_golden_file_passes_the_api_servers_checks(case: str, child: str):
    """The file itself, not the builder's output: a regenerated golden must still be a valid object."""
    assert_admitted(_golden(case, child))


def assert_admitted(manifest: dict) -> None:
    """The API server would create it: the upstream schemas (strict) and the ported checks. A JobSet: the
    upstream CRD's schema and CEL rules (where DISTILLERY_JOBSET_CRD names the file), its webhook's pod
    name rule, and the Jobs its controller makes from it, checked as any Job."""
    if manifest["kind"] != "JobSet":
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
        assert apiserver.object_errors(manifest) == []
        return
    openapi = jobset_crd.schema()
    assert openapi is None or jobset_crd.schema_problems(manifest, openapi) == []
    assert all(apiserver.is_dns1035_label(name) for name in jobset_crd.longest_pod_names(manifest))
    assert apiserver.object_errors({**manifest, "spec": {}}) == []
    for job in jobset_crd.child_jobs(manifest):
        kubernetes_validate.validate(job, K8S_VERSION, strict=True)
        assert apiserver.object_errors(job) == []


def _stage_of(child: str, job: DistillationJob):
    """The spec section a child's pods come from, and the GPUs it asks for."""
    spec = job.spec
    return {
        "teacher": (spec.teacher, spec.teacher.gpus),
        "check": (spec.generation, 0),  # the check pod runs where generation runs, on no GPU
        "generate": (spec.generation, 0),
        "train": (spec.training, spec.training.gpus),
        "evaluate": (spec.evaluation, spec.evaluation.gpus),
    }[child]


def _flag(args: list[str], flag: str) -> str | None:
    """The value of `flag` in an argv, as `--flag value` or `--flag=value`; None when absent."""
    for index, arg in enumerate(args):
        if arg == flag:
            return args[index + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


@pytest.mark.parametrize(("case", "child"), ALL, ids=[f"{c}-{k}" for c, k in ALL])
def test_golden_file_says_what_its_spec_says(case: str, child: str):
    """Properties derived from the spec, checked on the golden file (not on the builder's output)."""
    job = CASES[case]()
    manifest = _golden(case, child)
    meta = manifest["metadata"]
    assert meta["namespace"] == job.metadata.namespace
    # The labels the operator's watch (managed-by) and its cache (the job label) select children by.
    assert meta["labels"][MANAGED_BY] == MANAGER
    assert meta["labels"][JOB_LABEL] == label_value(job.metadata.name)
    if child == "pvc" and job.spec.storage.pvc.reclaim_policy == "Retain":
        assert "ownerReferences" not in meta
    else:
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "distillery.dev/v1alpha1",
                "kind": "DistillationJob",
                "name": job.metadata.name,
                "uid": UID,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    teacher_pods = (
        _golden(case, "teacher")["spec"]["template"]["metadata"]["labels"]
        if (job.spec.teacher.endpoint is None)
        else None
    )
    if child == "teacher-service":
        assert manifest["spec"]["selector"].items() <= teacher_pods.items()
    if child == "teacher-policy":
        assert manifest["spec"]["podSelector"]["matchLabels"].items() <= teacher_pods.items()
    if manifest["kind"] == "Job":
        queue = job.spec.queue_name
        assert meta["labels"].get(KUEUE_QUEUE_LABEL) == queue
        assert manifest["spec"]["suspend"] is bool(queue)
    if child == "teacher":  # Kueue's Deployment integration: the queue label on the Deployment and its pods
        queue = job.spec.queue_name
        assert meta["labels"].get(KUEUE_QUEUE_LABEL) == queue
        assert manifest["spec"]["template"]["metadata"]["labels"].get(KUEUE_QUEUE_LABEL) == queue
    template = manifest["spec"].get("template")
    if template is None:
        return
    if manifest["kind"] == "Deployment":
        assert manifest["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    section, gpus = _stage_of(child, job)
    pod = template["spec"]
    (container,) = pod["containers"]
    resources = container["resources"]
    # Extended resources are asked for in limits; a request, where set, must equal the limit.
    assert resources.get("limits", {}).get("nvidia.com/gpu", "0") == str(gpus), resources
    assert resources["requests"].get("nvidia.com/gpu", str(gpus)) == str(gpus), resources
    # The section's pod settings over the operator's defaults: maps merged key by key (the section's
    # value wins), lists and affinity the section's when given, names the section's when set.
    defaults = config_for(case).pod_defaults
    assert pod.get("nodeSelector", {}) == {**defaults.node_selector, **section.node_selector}
    tolerations = section.tolerations or defaults.tolerations
    wanted = [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tolerations]
    assert pod.get("tolerations", []) == wanted
    secrets = section.image_pull_secrets or defaults.image_pull_secrets
    assert pod.get("imagePullSecrets", []) == [{"name": s.name} for s in secrets]
    for field in ("service_account_name", "priority_class_name", "runtime_class_name"):
        wanted_name = getattr(section, field) or getattr(defaults, field)
        assert pod.get(to_camel(field)) == wanted_name, field
    affinity = section.affinity or defaults.affinity
    assert pod.get("affinity") == (
        affinity.model_dump(by_alias=True, exclude_defaults=True) if affinity else None
    )
    pod_meta = template["metadata"]
    # Pods: the extra labels (the section's over the defaults') and the operator's own (the object's, less the
    # Kueue queue label, which goes on a Job but also on the teacher's pods: Kueue's Deployment integration);
    # the extra annotations merged the same way.
    own = {
        key: value for key, value in meta["labels"].items() if key != KUEUE_QUEUE_LABEL or child == "teacher"
    }
    assert pod_meta["labels"] == {**defaults.labels, **section.labels, **own}
    assert pod_meta.get("annotations", {}) == {**defaults.annotations, **section.annotations}
    args = container["args"]
    if child == "teacher":
        tensor_parallel = _flag(args, "--tensor-parallel-size")
        assert int(tensor_parallel or "1") == job.spec.teacher.tensor_parallel_size
    if child == "train":
        launcher = container["command"] + args
        per_node = _flag(launcher, "--nproc_per_node")
        assert int(per_node or "1") == max(job.spec.training.gpus, 1)


@pytest.mark.parametrize(("case", "child"), ALL, ids=[f"{c}-{k}" for c, k in ALL])
def test_validates_against_upstream_schema(case: str, child: str):
    assert_admitted(build(child, CASES[case](), config_for(case)))


def test_schema_validation_catches_a_broken_manifest():
    """The validator used above does reject mistakes (so the test above can fail)."""
    manifest = build("generate", tiny_job(), CONFIG)
    manifest["spec"]["template"]["spec"]["containers"][0]["workingdir"] = "/data"  # wrong case
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


@pytest.mark.parametrize("case", list(CASES))
def test_children_are_owned_labelled_and_run_as_non_root(case: str):
    job = CASES[case]()
    for child, manifest in _children(job, config_for(case)).items():
        meta = manifest["metadata"]
        assert meta["name"] == child_name(child, job)
        assert len(meta["name"]) <= 63
        if child == "pvc" and job.spec.storage.pvc.reclaim_policy == "Retain":
            assert "ownerReferences" not in meta, "a retained claim outlives its job"
        else:
            owner = meta["ownerReferences"][0]
            assert (owner["kind"], owner["uid"], owner["controller"]) == ("DistillationJob", UID, True)
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "distillery-operator"
        assert meta["labels"]["distillery.dev/job"] == label_value(job.metadata.name)
        template = manifest["spec"].get("template")
        if template:
            pod = template["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["automountServiceAccountToken"] is False
            (container,) = pod["containers"]
            assert container["resources"]["requests"], child
            assert container["workingDir"] == job.spec.storage.mount_path
            assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
            # A read-only root: what the images write outside the storage goes to /tmp (images/README.md).
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
            assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == tmp["name"])
            assert (
                template["metadata"]["labels"]["distillery.dev/stage"]
                == meta["labels"]["distillery.dev/stage"]
            )


@pytest.mark.parametrize("case", CASES)
def test_stage_jobs_never_run_two_pods_at_once_and_forgive_disruptions(case: str):
    job = CASES[case]()
    for child in ("generate", "train", "evaluate"):
        spec = build(child, job, BuildConfig())["spec"]
        assert spec["podReplacementPolicy"] == "Failed", child
        (rule,) = spec["podFailurePolicy"]["rules"]
        assert rule == {
            "action": "Ignore",
            "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
        }
        assert spec["template"]["spec"]["restartPolicy"] == "Never"  # what a podFailurePolicy requires


@pytest.mark.parametrize("case", CASES)
def test_a_killed_check_pod_is_retried_but_its_verdict_fails_the_job_at_once(case: str):
    """A chaos run SIGKILLed the check pod and the whole job failed (backoffLimit 0): a crash is not a
    verdict. Fed to the harness's Job controller rules (tests/harness/job.py failure_action), as a
    cluster's would apply them: exit 137 counts against backoffLimit (> 0), a verdict fails the Job."""
    from distillery.contract.exit_codes import ExitCode
    from tests.harness.job import failure_action

    job = CASES[case]()
    spec = build("check", job, BuildConfig())["spec"]
    assert spec["backoffLimit"] == job.spec.generation.backoff_limit > 0
    policy = spec["podFailurePolicy"]

    class Ended:  # a failed check pod as failure_action reads it
        def __init__(self, code: int):
            self.containers = [type("C", (), {"name": "check", "exit_codes": [code]})()]

        def status(self):
            return {"conditions": []}

    assert failure_action(policy, Ended(137)) == "Count"
    assert failure_action(policy, Ended(int(ExitCode.STAGE_FAILED))) == "Count"
    for verdict in (ExitCode.INVALID_SPEC, ExitCode.STORAGE_UNWRITABLE, ExitCode.MISSING_DEPENDENCY):
        assert failure_action(policy, Ended(int(verdict))) == "FailJob", verdict


def test_secrets_are_passed_by_reference_only():
    for job in (gpu_job(), endpoint_job()):
        text = json.dumps(_children(job))
        assert "secretKeyRef" in text
        for manifest in _children(job).values():
            for container in manifest["spec"].get("template", {}).get("spec", {}).get("containers", []):
                for env in container["env"]:
                    assert "value" in env or "secretKeyRef" in env["valueFrom"]
                    if env["name"] in ("HF_TOKEN", "DISTILLERY_TEACHER_API_KEY"):
                        assert "value" not in env


def test_generation_job_shards_parallelism_and_teacher_url():
    job = gpu_job()
    gen = build("generate", job, CONFIG)
    assert gen["spec"]["completionMode"] == "Indexed"
    assert (gen["spec"]["completions"], gen["spec"]["parallelism"]) == (16, 8)
    assert gen["spec"]["backoffLimitPerIndex"] == job.spec.generation.backoff_limit
    args = gen["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--teacher-url") + 1] == f"http://{names(job).teacher}:8000/v1"
    inline = json.loads(args[args.index("--job") + 1])
    assert DistillationJob.model_validate(inline).spec == job.spec
    tiny = build("generate", tiny_job(), CONFIG)["spec"]
    assert tiny["parallelism"] == tiny["completions"] == 2


def test_kueue_queue_label_and_suspended_start():
    job = gpu_job()
    for child in ("generate", "train", "evaluate"):
        manifest = build(child, job, CONFIG)
        assert manifest["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-team-a"
        assert manifest["spec"]["suspend"] is True
    assert "kueue.x-k8s.io/queue-name" not in build("train", tiny_job(), CONFIG)["metadata"]["labels"]


def test_kueue_admits_the_teacher_pods_too():
    """The teacher Deployment carries the queue label for Kueue's Deployment integration (its GPUs are
    admitted like the Jobs'); its pods are gated by Kueue's webhook, not by the operator."""
    teacher = build("teacher", gpu_job(), CONFIG)
    assert teacher["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "gpu-team-a"
    assert teacher["spec"]["template"]["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "gpu-team-a"
    assert "schedulingGates" not in teacher["spec"]["template"]["spec"]
    tiny = build("teacher", tiny_job(), CONFIG)
    assert KUEUE_QUEUE_LABEL not in tiny["metadata"]["labels"]
    assert KUEUE_QUEUE_LABEL not in tiny["spec"]["template"]["metadata"]["labels"]


def test_teacher_gpus_probe_and_placement():
    job = gpu_job()
    deployment = build("teacher", job, CONFIG)
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    args = container["args"]
    assert args[args.index("--tensor-parallel-size") + 1] == str(job.spec.teacher.tensor_parallel_size) == "8"
    probe = container["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] >= job.spec.teacher.startup_timeout_seconds
    assert probe["httpGet"]["path"] == container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert (
        deployment["spec"]["selector"]["matchLabels"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )


def test_cpu_teacher_gets_a_kv_cache_size_unless_its_args_give_one():
    # vLLM's CPU build would size it from the node's memory and refuse to start on a shared node.
    args = build("teacher", tiny_job(), CONFIG)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--kv-cache-memory-bytes") + 1] == str(2**30)
    gpu = build("teacher", gpu_job(), CONFIG)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--kv-cache-memory-bytes" not in gpu
    for extra in (["--kv-cache-memory-bytes=4294967296"], ["--gpu-memory-utilization", "0.3"]):
        job = tiny_job()
        job.spec.teacher.extra_args = extra
        args = build("teacher", job, CONFIG)["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args.count("--kv-cache-memory-bytes") == 0 and args[-len(extra) :] == extra


def test_network_policy_admits_only_this_jobs_generation_pods():
    job = gpu_job()
    policy = build("teacher-policy", job, CONFIG)["spec"]
    teacher_pods = build("teacher", job, CONFIG)["spec"]["template"]["metadata"]["labels"]
    generation_pods = build("generate", job, CONFIG)["spec"]["template"]["metadata"]["labels"]
    training_pods = build("train", job, CONFIG)["spec"]["template"]["metadata"]["labels"]
    other_job_pods = build("generate", tiny_job(), CONFIG)["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= teacher_pods.items()
    allowed = policy["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    assert allowed.items() <= generation_pods.items()
    assert not allowed.items() <= training_pods.items()
    assert not allowed.items() <= other_job_pods.items()


def test_on_policy_training_pods_are_told_the_teacher_and_admitted_by_its_policy():
    job = onpolicy_job()
    train = build("train", job, CONFIG)["spec"]["template"]
    args = train["spec"]["containers"][0]["args"]
    assert args[args.index("--teacher-url") + 1] == f"http://{names(job).teacher}:8000/v1"
    assert args[args.index("--teacher-model") + 1] == "teacher"
    allowed = [
        rule["podSelector"]["matchLabels"]
        for rule in build("teacher-policy", job, CONFIG)["spec"]["ingress"][0]["from"]
    ]
    for stage in ("generate", "train"):
        pods = build(stage, job, CONFIG)["spec"]["template"]["metadata"]["labels"]
        assert any(rule.items() <= pods.items() for rule in allowed), stage
    evaluation_pods = build("evaluate", job, CONFIG)["spec"]["template"]["metadata"]["labels"]
    assert not any(rule.items() <= evaluation_pods.items() for rule in allowed)
    # Other methods' training pods neither get the URL nor pass the policy (tested above for gpu).
    assert (
        "--teacher-url"
        not in build("train", tiny_job(), CONFIG)["spec"]["template"]["spec"]["containers"][0]["args"]
    )


def test_on_policy_training_with_an_endpoint_gets_its_key_by_reference():
    job = endpoint_job()
    job.spec.training.method = TrainingMethod.on_policy
    container = build("train", job, CONFIG)["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][container["args"].index("--teacher-url") + 1] == "https://llm.example.com/v1"
    key = {
        "name": "DISTILLERY_TEACHER_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "llm-key", "key": "api-key"}},
    }
    assert key in container["env"]
    sft = build("train", endpoint_job(), CONFIG)["spec"]["template"]["spec"]["containers"][0]
    assert key not in sft["env"] and "--teacher-url" not in sft["args"]


def test_training_job_uses_torchrun_only_with_several_gpus():
    gpu = build("train", gpu_job(), CONFIG)["spec"]["template"]["spec"]["containers"][0]
    cpu = build("train", tiny_job(), CONFIG)["spec"]["template"]["spec"]["containers"][0]
    assert "torchrun" in " ".join(gpu["command"] + gpu["args"])
    assert "torchrun" not in " ".join(cpu["command"] + cpu["args"])
    assert gpu["image"] == CONFIG.worker_cuda_image and cpu["image"] == CONFIG.worker_image


@pytest.mark.parametrize(
    "name",
    ["a", "x" * 253, "support.team-" + "y" * 80, "9lives", "a" * 63],
)
def test_child_names_fit_and_are_deterministic(name: str):
    for suffix, limit in (("teacher-ingress", 63), ("generate", 52)):
        first = fit_name(name, suffix, limit)
        assert first == fit_name(name, suffix, limit)
        assert len(first) <= limit
        assert first[0].isalpha() and first.endswith(suffix)
        assert all(c.isalnum() or c == "-" for c in first)
    assert len(label_value(name)) <= 63


def test_similar_long_names_get_different_children():
    base = "z" * 70
    assert fit_name(base + "a", "train", 52) != fit_name(base + "b", "train", 52)
    assert fit_name("a.b", "train") != fit_name("a-b", "train")


def test_no_claim_is_built_for_an_existing_one():
    assert build("pvc", endpoint_job(), CONFIG) is None
    claim = build("pvc", gpu_job(), CONFIG)
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Ti"


def test_worker_images_come_from_the_environment_and_spec_overrides():
    from distillery.controller.settings import from_environment

    config = from_environment(
        {"DISTILLERY_WORKER_IMAGE": "r/w:2", "DISTILLERY_WORKER_CUDA_IMAGE": "r/c:2"}
    ).build_config()
    assert (config.worker_image, config.worker_cuda_image) == ("r/w:2", "r/c:2")
    job = tiny_job()
    job.spec.evaluation.image = "custom/eval:3"
    assert (
        build("evaluate", job, config)["spec"]["template"]["spec"]["containers"][0]["image"]
        == "custom/eval:3"
    )


def test_pod_settings_merge_rules():
    """The section's settings over the operator's defaults, field by field (merge_pod_settings)."""
    job = podsettings_job()
    config = config_for("podsettings")

    def pod(child):
        return build(child, job, config)["spec"]["template"]

    teacher, train, evaluate, generate, check = (
        pod(c) for c in ("teacher", "train", "evaluate", "generate", "check")
    )
    # Labels and annotations: key by key, the section's value winning; the operator's own stay.
    assert teacher["metadata"]["labels"]["team"] == "support"
    assert train["metadata"]["labels"]["team"] == "platform"
    assert teacher["metadata"]["labels"]["example.com/cost-center"] == "ml-42"
    assert teacher["metadata"]["labels"]["distillery.dev/stage"] == "teacher"
    assert evaluate["metadata"]["annotations"] == {
        "example.com/owner": "support@example.com",
        "example.com/run": "1",
    }
    assert train["metadata"]["annotations"] == {"example.com/owner": "platform@example.com"}
    # nodeSelector: key by key.
    assert generate["spec"]["nodeSelector"] == {
        "kubernetes.io/os": "linux",
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
        "example.com/pool": "cpu",
    }
    assert teacher["spec"]["nodeSelector"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    # Lists: the section's replaces the default's when given.
    assert train["spec"]["imagePullSecrets"] == [{"name": "training-registry"}]
    assert teacher["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert [t["key"] for t in train["spec"]["tolerations"]] == ["nvidia.com/gpu"]
    assert [t["key"] for t in generate["spec"]["tolerations"]] == ["dedicated"]
    # Affinity: whole.
    assert set(teacher["spec"]["affinity"]) == {"podAntiAffinity"}
    assert set(train["spec"]["affinity"]) == {"nodeAffinity"}
    # Names: the section's when set.
    assert (teacher["spec"]["priorityClassName"], train["spec"]["priorityClassName"]) == (
        "gpu-critical",
        "ml-batch",
    )
    assert (train["spec"]["serviceAccountName"], teacher["spec"]["serviceAccountName"]) == (
        "trainer",
        "distillery-worker",
    )
    assert teacher["spec"]["runtimeClassName"] == "nvidia" and "runtimeClassName" not in train["spec"]
    # The check pod runs with generation's settings; no token is mounted whatever the ServiceAccount.
    assert check["spec"]["nodeSelector"] == generate["spec"]["nodeSelector"]
    assert all(p["spec"]["automountServiceAccountToken"] is False for p in (teacher, train, check))
    # Without defaults and settings, a pod gets none of them.
    plain = build("train", tiny_job(), CONFIG)["spec"]["template"]
    assert not {
        "imagePullSecrets",
        "serviceAccountName",
        "priorityClassName",
        "runtimeClassName",
        "affinity",
    } & set(plain["spec"])
    assert "annotations" not in plain["metadata"]


@pytest.mark.parametrize(
    ("section", "value", "field"),
    [
        ("teacher", {"labels": {"app.kubernetes.io/managed-by": "me"}}, "spec.teacher.labels"),
        ("training", {"labels": {"distillery.dev/job": "other"}}, "spec.training.labels"),
        ("generation", {"labels": {"distillery.dev/stage": "x"}}, "spec.generation.labels"),
        ("evaluation", {"labels": {"kueue.x-k8s.io/queue-name": "q"}}, "spec.evaluation.labels"),
        ("training", {"labels": {"team": "two words"}}, "spec.training.labels.team"),
        ("training", {"annotations": {"note": "x" * 513}}, "spec.training.annotations.note"),
        ("teacher", {"serviceAccountName": "Trainer"}, "spec.teacher.serviceAccountName"),
        ("generation", {"priorityClassName": "high_priority"}, "spec.generation.priorityClassName"),
        ("evaluation", {"runtimeClassName": "nvidia."}, "spec.evaluation.runtimeClassName"),
        ("training", {"imagePullSecrets": [{"name": "Reg"}]}, "spec.training.imagePullSecrets[0].name"),
        (
            "teacher",
            {
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}
                    }
                }
            },
            "spec.teacher.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms",
        ),
        (
            "training",
            {
                "affinity": {
                    "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{"labelSelector": {}}]}
                }
            },
            "spec.training.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey",
        ),
        (
            "evaluation",
            {
                "affinity": {
                    "nodeAffinity": {
                        "preferredDuringSchedulingIgnoredDuringExecution": [
                            {
                                "weight": 0,
                                "preference": {"matchExpressions": [{"key": "a", "operator": "Exists"}]},
                            }
                        ]
                    }
                }
            },
            "spec.evaluation.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight",
        ),
    ],
)
def test_bad_pod_settings_are_refused_naming_the_field(section, value, field):
    from distillery.errors import InvalidJob, parse_job

    document = yaml.safe_load((ROOT / "examples" / "tiny.yaml").read_text())
    document["spec"][section].update(value)
    with pytest.raises(InvalidJob) as refused:
        parse_job(document)
    assert any(line.startswith(field + ":") for line in str(refused.value).splitlines()), str(refused.value)

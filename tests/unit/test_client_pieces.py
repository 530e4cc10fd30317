"""The client's pure parts: kubectl's ages, the copy pod (against the upstream Pod schema), the copy's
framing and unpacking, the stage selectors, and the one-line errors before any request is made."""

from __future__ import annotations

import base64
import datetime
import hashlib
import io
import tarfile
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from distillery.api import DistillationJob
from distillery.client import Client, ClientError, Unreachable, copy, pod_selector, render, stage_names
from distillery.client.api import as_job
from distillery.client.transport import connect
from distillery.errors import InvalidJob
from distillery.manifests.common import MANAGED_BY, MANAGER
from tests.support.client_world import job_document, succeeded_status

pytestmark = pytest.mark.unit

K8S_VERSION = "1.31.0"
NOW = datetime.datetime(2026, 12, 7, 12, 0, tzinfo=datetime.timezone.utc)


def a_job() -> DistillationJob:
    job = DistillationJob.model_validate(job_document("tiny", "team-a"))
    job.metadata.__pydantic_extra__.update(uid="0d6f-uid", creationTimestamp="2026-12-07T11:00:00Z")
    return job


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0s"),
        (119, "119s"),
        (120, "2m"),
        (190, "3m10s"),
        (70 * 60, "70m"),
        (3 * 3600 + 5 * 60, "3h5m"),
        (47 * 3600, "47h"),
        (49 * 3600, "2d1h"),
        ((8 * 24 + 2) * 3600, "8d"),
        (367 * 86400, "367d"),
        ((365 * 2 + 1) * 86400, "2y1d"),
        (365 * 8 * 86400 + 7200, "8y"),
    ],
)
def test_durations_read_as_kubectl_ages(seconds: int, shown: str):
    assert render.duration(seconds) == shown


def test_copy_pod_is_a_valid_read_only_pod_of_the_job():
    job = a_job()
    template = {"nodeSelector": {"pool": "gpu"}, "tolerations": [{"key": "gpu", "operator": "Exists"}]}
    pod = copy.copy_pod(job, "/data/jobs/tiny/reports", "registry.example/worker:1", template)
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    spec = pod["spec"]
    assert spec["volumes"][0]["persistentVolumeClaim"] == {"claimName": "tiny-data", "readOnly": True}
    assert spec["containers"][0]["volumeMounts"][0] == {
        "name": "storage",
        "mountPath": "/data",
        "readOnly": True,
    }
    assert spec["containers"][0]["command"][-1] == "/data/jobs/tiny/reports"
    assert spec["nodeSelector"] == {"pool": "gpu"} and spec["tolerations"] == template["tolerations"]
    assert pod["metadata"]["ownerReferences"][0]["uid"] == "0d6f-uid"
    # Labelled with the job, but not as the operator's: its stage selectors never match it.
    labels = pod["metadata"]["labels"]
    assert labels["distillery.dev/job"] == "tiny" and labels[MANAGED_BY] != MANAGER
    assert not set(pod_selector("tiny").split(",")) <= {f"{k}={v}" for k, v in labels.items()}


def test_copy_pod_needs_the_job_as_the_server_has_it():
    job = DistillationJob.model_validate(job_document("tiny", "team-a"))
    with pytest.raises(ClientError, match=r"metadata\.uid is empty"):
        copy.copy_pod(job, "/data/x", "img", None)


def framed(data: bytes, size: int | None = None, digest: str | None = None) -> str:
    body = base64.encodebytes(data).decode()
    trailer = f"{copy.END} {digest or hashlib.sha256(data).hexdigest()} {len(data) if size is None else size}"
    return f"{copy.BEGIN}\n{body}{trailer}\n"


def tar_of(**members: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name.replace("__", "/"))
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def test_decode_takes_only_a_whole_copy(tmp_path: Path):
    data = tar_of(**{"evaluation.md": b"# report\n", "sub__a.json": b"{}"})
    assert copy.decode("kubelet noise\n" + framed(data)) == data
    assert copy.decode(framed(data).rsplit(copy.END, 1)[0]) is None  # still being written
    with pytest.raises(ClientError, match="was cut"):
        copy.decode(framed(data[:-512], size=len(data), digest=hashlib.sha256(data).hexdigest()))
    with pytest.raises(ClientError, match="/data/jobs/x/reports: not on the job's storage"):
        copy.decode(f"{copy.MISSING} /data/jobs/x/reports\n")
    written = copy.unpack(data, tmp_path / "out")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in written) == [
        "evaluation.md",
        "sub/a.json",
    ]


def test_unpack_refuses_paths_outside_the_target(tmp_path: Path):
    with pytest.raises(ClientError, match="not a plain file under"):
        copy.unpack(tar_of(**{"..__escape.txt": b"x"}), tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


def test_stage_selectors_name_the_operator_labels():
    assert set(stage_names()) == {"check", "teacher", "generate", "train", "evaluate"}
    assert pod_selector("tiny") == "distillery.dev/job=tiny,app.kubernetes.io/managed-by=distillery-operator"
    with pytest.raises(ClientError, match=r"^stage: expected one of check, .*, got 'trian'$"):
        pod_selector("tiny", "trian")


def test_a_job_to_submit_is_validated_first(tmp_path: Path):
    body = job_document("tiny", "team-a")
    body["spec"]["training"]["epochs"] = 0
    with pytest.raises(InvalidJob) as error:
        as_job(body)
    assert any("training.epochs" in str(p.path) for p in error.value.problems)
    two = tmp_path / "two.yaml"
    two.write_text(yaml.safe_dump_all([job_document("a", "x"), job_document("b", "x")]))
    with pytest.raises(ClientError, match="expected one DistillationJob, found 2"):
        as_job(two)
    model, sent = as_job(DistillationJob.model_validate(job_document("tiny", "team-a")))
    assert "status" not in sent and sent["spec"]["teacher"]["model"] == model.spec.teacher.model


def test_table_and_page_show_the_status():
    job = a_job()
    job.status = succeeded_status(job)
    header, row = render.get_table([job], NOW).splitlines()
    assert header.split() == list(render.GET_COLUMNS)
    assert row.split() == ["tiny", "Succeeded", "done", "0.833", "12.40", "USD", "60m"]
    page = render.describe(job, [], NOW)
    assert "took 95s" in page and "retention: 0.833" in page and "Events:  <none>" in page


def test_connection_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(
        Unreachable, match=r"^no kubeconfig at .*/missing \(set KUBECONFIG or pass --kubeconfig\)$"
    ):
        connect(kubeconfig=str(tmp_path / "missing"))
    config = tmp_path / "config"
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://10.0.0.1:6443"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "prod", "context": {"cluster": "c", "user": "u", "namespace": "ml"}}],
                "current-context": "prod",
            }
        )
    )
    assert connect(kubeconfig=str(config)).namespace == "ml"  # the context's, as kubectl takes it
    assert connect(kubeconfig=str(config), namespace="other").namespace == "other"
    with pytest.raises(ClientError, match=r"^context 'dev' is not in .* \(it has: prod\)$"):
        connect(context="dev", kubeconfig=str(config))
    # As kubectl -n: a job naming another namespace is refused before anything is sent.
    with pytest.raises(ClientError, match=r"^metadata\.namespace: the job names namespace 'ml', but 'dev'"):
        Client(kubeconfig=str(config), namespace="dev").submit(job_document("tiny", "ml"))


def test_connection_options_go_before_or_after_the_verb():
    from distillery.client.cli import build_parser

    parser = build_parser()
    before = parser.parse_args(["-n", "ml", "--context", "prod", "get"])
    after = parser.parse_args(["get", "tiny", "-n", "ml", "--kubeconfig", "/k"])
    assert (before.namespace, before.context, before.kubeconfig) == ("ml", "prod", None)
    assert (after.namespace, after.kubeconfig, after.name) == ("ml", "/k", "tiny")
    assert parser.parse_args(["-n", "a", "logs", "tiny", "-n", "b"]).namespace == "b"  # the later one wins

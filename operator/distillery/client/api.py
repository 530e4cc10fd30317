"""`Client`: DistillationJobs on a cluster from Python, on the typed models of `distillery.api`.

    from distillery.client import Client

    client = Client()                        # the kubeconfig's current context and namespace, like kubectl
    job = client.submit("examples/tiny-cluster.yaml", wait=True, timeout=3600)
    print(job.status.phase, job.status.evaluation.retention)
    for line in client.logs("tiny", stage="train"):
        print(line.pod, line.text)
    print(client.report("tiny", "tiny-report").summary)

A stage's pods are found by the labels the operator puts on every child
(`distillery.manifests.common`): `distillery.dev/job=<job name>` and
`distillery.dev/stage=<check|teacher|generate|train|evaluate>`.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from distillery.api import API_VERSION, GROUP, PLURAL, VERSION, DistillationJob, Phase
from distillery.client import copy
from distillery.client.errors import ClientError, NotFound, WaitTimeout
from distillery.client.transport import MERGE_PATCH, Transport, connect, path
from distillery.contract import stages
from distillery.errors import load_documents, parse_job
from distillery.manifests.common import (
    JOB_LABEL,
    MANAGED_BY,
    MANAGER,
    STAGE_LABEL,
    label_value,
    storage_volume,
)
from distillery.storage import Layout

TEACHER = "teacher"  # the teacher's pods' stage label (manifests/teacher.py)
POLL_SECONDS = 2.0
COPY_TIMEOUT_SECONDS = 600.0  # a first pull of a worker image (several GB) takes minutes


class LogLine(NamedTuple):
    pod: str
    text: str


@dataclass(frozen=True)
class ReportCopy:
    """What `report` copied: the summary (evaluation.md), where the files are, and where they came from."""

    summary: str
    reports: Path
    student: Path | None
    source: str


def stage_names() -> tuple[str, ...]:
    """Every value of the `distillery.dev/stage` label: each stage of the table, and the teacher."""
    return (*(str(s.value) for s in stages.names()), TEACHER)


def pod_selector(name: str, stage: str | None = None) -> str:
    """The label selector of a job's stage pods (all stages when `stage` is None)."""
    if stage is not None and stage not in stage_names():
        raise ClientError(f"stage: expected one of {', '.join(stage_names())}, got {stage!r}")
    selector = f"{JOB_LABEL}={label_value(name)},{MANAGED_BY}={MANAGER}"
    return selector + (f",{STAGE_LABEL}={stage}" if stage else "")


def as_job(job: DistillationJob | dict[str, Any] | str | Path) -> tuple[DistillationJob, dict[str, Any]]:
    """A job given as a model, a dict or a YAML file: (the validated model, the body to create).

    A dict or a file is sent as written (the API server applies the CRD's defaults, as for kubectl apply);
    a model is sent with the fields that were set. Raises InvalidJob naming each bad field.
    """
    if isinstance(job, DistillationJob):
        body = job.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude={"status"})
        body.setdefault("apiVersion", API_VERSION)
        body.setdefault("kind", "DistillationJob")
        return job, body
    if isinstance(job, (str, Path)):
        documents = load_documents(str(job))
        jobs = [d for d in documents if isinstance(d, dict) and d.get("kind") == "DistillationJob"]
        if len(jobs) != 1:
            raise ClientError(
                f"{job}: expected one DistillationJob, found {len(jobs)} (of {len(documents)} documents)"
            )
        return parse_job(jobs[0], str(job)), {k: v for k, v in jobs[0].items() if k != "status"}
    return parse_job(job), {k: v for k, v in job.items() if k != "status"}


class Client:
    """DistillationJobs in one namespace of one cluster, reached as kubectl would reach it.

    Args:
        context: the kubeconfig context; None: its current context.
        namespace: None: the context's namespace, else `default`.
        kubeconfig: the kubeconfig file(s); None: $KUBECONFIG, else ~/.kube/config (in a pod: its service account).

    Every method raises `ClientError` (`NotFound`, `Unreachable`, `WaitTimeout`) with a one-line message.
    """

    def __init__(
        self, context: str | None = None, namespace: str | None = None, kubeconfig: str | None = None
    ):
        self.connection = connect(context, namespace, kubeconfig)
        self.namespace = self.connection.namespace
        self._namespace_given = namespace is not None  # as kubectl's -n: a file's own namespace must agree
        self.http = Transport(self.connection)

    # ------------------------------------------------------------------ jobs

    def _jobs(self, name: str | None = None, namespace: str | None = None) -> str:
        return path(GROUP, VERSION, PLURAL, namespace or self.namespace, name)

    def _what(self, name: str, namespace: str | None = None) -> str:
        return f'distillationjob "{name}" in namespace "{namespace or self.namespace}"'

    def submit(
        self,
        job: DistillationJob | dict[str, Any] | str | Path,
        wait: bool = False,
        timeout: float | None = None,
    ) -> DistillationJob:
        """Create the job (validated first, as `distillery validate` does) in its namespace or the client's;
        with `wait`, return once it has succeeded or failed (see `wait`)."""
        model, body = as_job(job)
        name = model.metadata.name
        if not name:
            raise ClientError("metadata.name: is required")
        namespace = model.metadata.namespace or self.namespace
        if self._namespace_given and namespace != self.namespace:
            raise ClientError(
                f"metadata.namespace: the job names namespace {namespace!r}, but {self.namespace!r} was asked for"
            )
        body["metadata"] = {**body.get("metadata", {}), "namespace": namespace}
        created = self.http.json(
            "POST", self._jobs(namespace=namespace), body=body, what=f'distillationjob "{name}"'
        )
        result = DistillationJob.model_validate(created)
        return self.wait(name, timeout, namespace=namespace) if wait else result

    def get(self, name: str, namespace: str | None = None) -> DistillationJob:
        """The job as the API server has it, status included (in `namespace`, default the client's)."""
        body = self.http.json("GET", self._jobs(name, namespace), what=self._what(name, namespace))
        return DistillationJob.model_validate(body)

    def list(self, all_namespaces: bool = False) -> list[DistillationJob]:
        """The jobs of the namespace (of every namespace with `all_namespaces`), by name."""
        resource = path(GROUP, VERSION, PLURAL) if all_namespaces else self._jobs()
        try:
            items = self.http.json("GET", resource, what="distillationjobs").get("items") or []
        except NotFound:  # a list is never "not found" unless the resource type is unknown
            raise NotFound(
                f"the API server at {self.connection.host} has no {PLURAL}.{GROUP}: "
                "install Distillery's CRD (the chart) first"
            ) from None
        jobs = [DistillationJob.model_validate(item) for item in items]
        return sorted(jobs, key=lambda j: (j.metadata.namespace or "", j.metadata.name or ""))

    def wait(self, name: str, timeout: float | None = None, namespace: str | None = None) -> DistillationJob:
        """Poll the job until its phase is terminal (Succeeded or Failed) and return it; WaitTimeout after
        `timeout` seconds (None: no limit). A failed job is returned, not raised: read its status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(name, namespace)
            phase = job.status.phase if job.status else None
            if phase is not None and phase.is_terminal:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(
                    f'distillationjob "{name}" is still {phase.value if phase else "without a phase"} '
                    f"after {timeout:g} s"
                )
            time.sleep(
                POLL_SECONDS if deadline is None else max(0.0, min(POLL_SECONDS, deadline - time.monotonic()))
            )

    def cancel(self, name: str) -> DistillationJob:
        """Stop the job: set `spec.suspend: true`, the API's one way to stop a job and keep it. The operator
        removes its running pods and starts nothing new (phase Suspended); the data stays on its storage.
        Resume by setting `suspend` back to false; `delete` removes the job and its children."""
        job = self.get(name)
        phase = job.status.phase if job.status else None
        if phase is not None and phase.is_terminal:
            raise ClientError(
                f'distillationjob "{name}" has already ended ({phase.value}); nothing to cancel'
            )
        patched = self.http.json(
            "PATCH",
            self._jobs(name),
            body={"spec": {"suspend": True}},
            content_type=MERGE_PATCH,
            what=self._what(name),
        )
        return DistillationJob.model_validate(patched)

    def delete(self, name: str) -> None:
        """Delete the job; Kubernetes' garbage collector removes its children (pods, Jobs, a created claim
        with reclaimPolicy Delete)."""
        self.http.json(
            "DELETE", self._jobs(name), query={"propagationPolicy": "Background"}, what=self._what(name)
        )

    def events(self, name: str) -> list[dict[str, Any]]:
        """The Events about the job (what `kubectl describe` shows), oldest first."""
        items = (
            self.http.json(
                "GET",
                path("", "v1", "events", self.namespace),
                query={"fieldSelector": f"involvedObject.name={name}"},
                what="events",
            ).get("items")
            or []
        )
        return [e for e in items if (e.get("involvedObject") or {}).get("kind") == "DistillationJob"]

    # ------------------------------------------------------------------ pods and logs

    def pods(self, name: str, stage: str | None = None) -> list[dict[str, Any]]:
        """The job's stage pods (one stage's with `stage`), oldest first."""
        items = (
            self.http.json(
                "GET",
                path("", "v1", "pods", self.namespace),
                query={"labelSelector": pod_selector(name, stage)},
                what="pods",
            ).get("items")
            or []
        )
        return sorted(
            items, key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"])
        )

    def logs(self, name: str, stage: str | None = None, follow: bool = False) -> Iterator[LogLine]:
        """The log lines of the job's stage pods (selected by `pod_selector`), pod by pod, oldest pod first;
        with `follow`, every pod's log is streamed at once until all its pods have ended."""
        self.get(name)  # NotFound for a job that is not there, rather than "no pods"
        pods = self.pods(name, stage)
        if not pods:
            which = f"stage {stage}" if stage else "any stage"
            raise NotFound(
                f'no pods of {which} of distillationjob "{name}" (selector {pod_selector(name, stage)}); '
                "they are made when the stage starts and removed when the job ends"
            )
        if not follow:
            for pod in pods:
                yield from self._pod_log(pod, follow=False)
            return
        yield from _merged([lambda pod=pod: self._pod_log(pod, follow=True) for pod in pods])

    def _pod_log(self, pod: dict[str, Any], follow: bool) -> Iterator[LogLine]:
        pod_name = pod["metadata"]["name"]
        query: dict[str, Any] = {"container": pod["spec"]["containers"][0]["name"]}
        resource = path("", "v1", "pods", self.namespace, pod_name) + "/log"
        try:
            if follow:
                for text in self.http.lines(
                    resource, query={**query, "follow": True}, what=f'pod "{pod_name}"'
                ):
                    yield LogLine(pod_name, text)
            else:
                for text in self.http.text(resource, query=query, what=f'pod "{pod_name}"').splitlines():
                    yield LogLine(pod_name, text)
        except ClientError as error:  # a pod still pulling its image, or gone meanwhile
            yield LogLine(pod_name, f"(no log: {error})")

    # ------------------------------------------------------------------ report

    def report(
        self,
        name: str,
        out_dir: str | Path,
        student: bool = False,
        image: str | None = None,
        timeout: float = COPY_TIMEOUT_SECONDS,
    ) -> ReportCopy:
        """Copy the job's reports (and with `student` the student) into `out_dir`/reports (and /student).

        From `spec.output` when the export is in an object store (with this machine's credentials);
        otherwise off the job's claim, through a short-lived pod of the job's worker image (`image`
        overrides it). Returns the summary (evaluation.md) with where the files went.
        """
        job = self.get(name)
        artifacts = job.status.artifacts if job.status else None
        if artifacts is None or artifacts.report is None:
            phase = job.status.phase.value if job.status and job.status.phase else "no phase yet"
            raise NotFound(f'distillationjob "{name}" has no report yet ({phase})')
        out = Path(out_dir)
        reports, student_dir = out / "reports", (out / "student" if student else None)
        uri = copy.exported_uri(job)
        if uri is not None:
            copy.copy_from_store(job, uri, reports, student_dir)
            source = uri
        else:
            layout = Layout(Path(job.spec.storage.mount_path), name)
            worker_image, template = image or self._worker_image(job), self._template(job)
            wanted = [(str(Path(artifacts.report).parent), reports)]
            if student_dir is not None:
                wanted.append((artifacts.student or str(layout.student), student_dir))
            for directory, target in wanted:
                copy.copy_off_claim(self.http, job, template, directory, target, worker_image, timeout)
            source = f"claim {storage_volume(job)['persistentVolumeClaim']['claimName']}"
        summary_file = reports / "evaluation.md"
        summary = summary_file.read_text(encoding="utf-8") if summary_file.is_file() else ""
        return ReportCopy(summary, reports, student_dir, source)

    def _worker_image(self, job: DistillationJob) -> str:
        """The image the job's stages ran: from its stage Jobs (evaluate's first), else its spec."""
        name = job.metadata.name or ""
        found = (
            self.http.json(
                "GET",
                path("batch", "v1", "jobs", self.namespace),
                query={"labelSelector": pod_selector(name)},
                what="jobs",
            ).get("items")
            or []
        )
        found.sort(key=lambda j: (j["metadata"].get("labels") or {}).get(STAGE_LABEL) != "evaluate")
        for stage_job in found:
            return stage_job["spec"]["template"]["spec"]["containers"][0]["image"]
        for section in (job.spec.evaluation, job.spec.training, job.spec.generation):
            if getattr(section, "image", None):
                return section.image  # type: ignore[return-value]
        raise ClientError(
            f'distillationjob "{name}": cannot tell its worker image (no stage Job of it is left and '
            "spec.evaluation.image is empty); pass it with --image"
        )

    def _template(self, job: DistillationJob) -> dict[str, Any] | None:
        pods = self.pods(job.metadata.name or "", "evaluate")
        return pods[-1]["spec"] if pods else None


def _merged(sources: list[Any]) -> Iterator[LogLine]:
    """The lines of several streams as they come (one thread per stream), until every stream has ended."""
    lines: queue.Queue[LogLine | None] = queue.Queue()

    def pump(source: Any) -> None:
        try:
            for line in source():
                lines.put(line)
        finally:
            lines.put(None)

    for source in sources:
        threading.Thread(target=pump, args=(source,), daemon=True).start()
    open_streams = len(sources)
    while open_streams:
        line = lines.get()
        if line is None:
            open_streams -= 1
        else:
            yield line


__all__ = ["Client", "LogLine", "Phase", "ReportCopy", "pod_selector", "stage_names"]

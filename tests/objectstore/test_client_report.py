"""`report` from `spec.output` in an object store: the export's files (laid out by the export's own
`files_to_export`) on a real S3 API (moto's server), found through the job's status on the emulated API
server, read with this machine's credentials and `storage.objectStore`'s endpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from distillery.client import Client
from distillery.evaluation.export import files_to_export
from distillery.storage import Layout
from tests.harness import serve_emulator
from tests.support.client_world import Operator, fill_claim, job_document, succeeded_status, write_kubeconfig
from tests.support.objectstore import store

pytestmark = pytest.mark.objectstore

NS = "team-a"


def test_report_and_student_come_from_the_export(s3, tmp_path: Path):
    uri = s3.uri("models/tiny")
    with serve_emulator([NS]) as (_, url):
        client = Client(kubeconfig=str(write_kubeconfig(url, NS, tmp_path / "kubeconfig")))
        document = job_document("tiny", NS)
        document["spec"]["output"] = {"uri": uri}
        document["spec"]["storage"]["objectStore"] = store(s3)
        body = client.submit(document).model_dump(mode="json", by_alias=True)
        job = client.get("tiny")
        files = fill_claim(tmp_path / "claim", job)  # what the export uploads from
        for local, relative in files_to_export(Layout(tmp_path / "claim", "tiny")):
            s3.put(f"models/tiny/{relative}", local.read_bytes())
        s3.put("models/tiny/README.md", b"# tiny\n")  # the model card, written last
        status = succeeded_status(job)
        status.artifacts.output = uri  # the operator sets it once the export is written
        Operator(url).write_status(body, status)

        copied = client.report("tiny", tmp_path / "out", student=True)

    assert copied.source == uri
    assert copied.summary == files["reports/evaluation.md"].decode()
    for relative, content in files.items():
        assert (tmp_path / "out" / relative).read_bytes() == content, relative
    assert (tmp_path / "out" / "student" / "README.md").read_bytes() == b"# tiny\n"
    assert not (tmp_path / "out" / "student" / "report").exists()

"""A real S3 API server on the loopback for the object-store tests: moto's standalone server, as a subprocess.

It stands in for S3, MinIO or Ceph RGW: the code under test talks to it over HTTP with its real
clients (s3fs/botocore for the stages, boto3 here to set buckets up), nothing is patched in process.
Credentials are fake but present, as they would be from the job's Secret.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from distillery.serving.vllm import free_port
from tests.support.objectstore import ACCESS_KEY_ID, S3, SECRET_ACCESS_KEY

STARTUP_DEADLINE_S = 60


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """moto's S3 server on 127.0.0.1, started once per session; its endpoint URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2)
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"moto's S3 server did not start:\n{Path(log).read_text()[-3000:]}")
            time.sleep(0.1)  # poll interval, bounded by the deadline
    yield endpoint
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture
def s3(s3_server, monkeypatch) -> S3:
    """A fresh bucket on the server, and the access keys in the environment (as a pod gets them)."""
    import boto3

    for name, value in (
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    bucket = f"distillery-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return S3(s3_server, bucket, client)

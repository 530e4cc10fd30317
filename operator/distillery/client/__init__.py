"""A Python client for DistillationJobs on a cluster, and the `kubectl distillery` plugin (`cli.py`).

    from distillery.client import Client
    job = Client().submit("job.yaml", wait=True)

The kubernetes package (the `operator` extra) is imported only when a `Client` connects.
"""

from distillery.client.api import Client, LogLine, ReportCopy, pod_selector, stage_names
from distillery.client.errors import ClientError, NotFound, Unreachable, WaitTimeout

__all__ = [
    "Client",
    "ClientError",
    "LogLine",
    "NotFound",
    "ReportCopy",
    "Unreachable",
    "WaitTimeout",
    "pod_selector",
    "stage_names",
]

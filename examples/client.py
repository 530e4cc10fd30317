"""Submit a DistillationJob, wait for it, show its evaluation log and copy its report: the Python client.

    python examples/client.py examples/tiny-cluster.yaml            # the kubeconfig's current context
    python examples/client.py job.yaml --context prod -n ml --timeout 7200

docs/client.md explains each call; tests/integration/test_client.py runs this script.
"""

from __future__ import annotations

import argparse
import sys

from distillery.client import Client, ClientError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", help="a YAML file with one DistillationJob")
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")
    parser.add_argument("-n", "--namespace", help="namespace (default: the context's)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the job")
    args = parser.parse_args()

    try:
        client = Client(context=args.context, namespace=args.namespace)
        job = client.submit(args.file)
        name = job.metadata.name
        print(f"submitted {name} to namespace {client.namespace}")

        job = client.wait(name, timeout=args.timeout)  # until Succeeded or Failed
        evaluation = job.status.evaluation
        retention = f", retention {evaluation.retention:.3f}" if evaluation and evaluation.retention else ""
        print(f"{name}: {job.status.phase.value}{retention}")

        for line in client.logs(name, stage="evaluate"):  # pods labelled distillery.dev/stage=evaluate
            print(f"[{line.pod}] {line.text}")

        copied = client.report(name, f"{name}-report")  # reports/ from spec.output or off the claim
        print(copied.summary)
    except ClientError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0 if job.status.phase.value == "Succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())

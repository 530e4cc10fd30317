"""`distillery operator`: run the Kubernetes operator.

    distillery operator [--metrics-port 8080] [--namespace NS ... | --all-namespaces]
                        [--leader-elect NAME [--leader-election-namespace NS]]

With `--leader-elect NAME` several replicas run and only the holder of the coordination.k8s.io
Lease NAME reconciles; the others keep their caches warm and take over within
`controller.leader.LEASE_SECONDS` of the leader stopping. The Lease lives in
`--leader-election-namespace` (default: the pod's own namespace, from POD_NAMESPACE). Without
`--leader-elect` the operator runs alone.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import uuid


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics-port", type=int, default=8080, metavar="PORT",
                        help="serve /metrics, /healthz and /readyz on this port (0: don't)")  # fmt: skip
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace", action="append", metavar="NS", help="watch only this namespace (repeatable)"
    )
    scope.add_argument("--all-namespaces", action="store_true", help="watch every namespace (the default)")
    parser.add_argument("--leader-elect", metavar="NAME", help="Lease for leader election among replicas")
    parser.add_argument("--leader-election-namespace", metavar="NS",
                        help="namespace of the Lease (default: $POD_NAMESPACE, else default)")  # fmt: skip
    parser.add_argument("--verbose", action="store_true", help="log kopf's own debugging output")


def identity() -> str:
    """This replica's name in the Lease: the pod's name (unique in a Deployment) and a random tail."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}-{uuid.uuid4().hex[:6]}"


def main(args: argparse.Namespace) -> int:
    import kopf

    from distillery.manifests import BuildConfig

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    problems = BuildConfig.from_env().problems()
    if problems:  # before anything starts: every pod would be built with them
        for problem in problems:
            logging.getLogger("distillery.operator").error("%s", problem)
        return 2
    from distillery.controller import handlers, server

    if not args.verbose:
        # kopf logs every handler call ("Handler 'job_event' succeeded"): one line per watch event.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if args.leader_elect:
        namespace = args.leader_election_namespace or os.environ.get("POD_NAMESPACE") or "default"
        handlers.use_leader_election(args.leader_elect, namespace, identity())
    if args.metrics_port:
        server.start(args.metrics_port, handlers.health)
    namespaces = args.namespace or []
    kopf.run(registry=handlers.registry, clusterwide=not namespaces, namespaces=namespaces, standalone=True)
    return 0

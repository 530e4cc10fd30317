"""`distillery operator`: run the Kubernetes operator.

    distillery operator [--metrics-port 8080] [--namespace NS ... | --all-namespaces] [--peering NAME]

Leader election is kopf's peering: with `--peering NAME` several replicas run and only
the one with the highest priority handles jobs (the ClusterKopfPeering object NAME must
exist; the Helm chart creates it). Without `--peering` the operator runs standalone.
"""

from __future__ import annotations

import argparse
import logging


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics-port", type=int, default=8080, metavar="PORT",
                        help="serve /metrics, /healthz and /readyz on this port (0: don't)")  # fmt: skip
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace", action="append", metavar="NS", help="watch only this namespace (repeatable)"
    )
    scope.add_argument("--all-namespaces", action="store_true", help="watch every namespace (the default)")
    parser.add_argument("--peering", metavar="NAME", help="kopf peering object for leader election")
    parser.add_argument("--verbose", action="store_true", help="log kopf's own debugging output")


def main(args: argparse.Namespace) -> int:
    import kopf

    from distillery.controller import handlers, server

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    if args.metrics_port:
        server.start(args.metrics_port, handlers.health)
    namespaces = args.namespace or []
    kopf.run(
        registry=handlers.registry,
        clusterwide=not namespaces,
        namespaces=namespaces,
        peering_name=args.peering,
        standalone=args.peering is None,
    )
    return 0

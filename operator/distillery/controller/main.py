"""`distillery operator`: run the Kubernetes operator.

    distillery operator [--metrics-port 8080] [--namespace NS ... | --all-namespaces]
                        [--leader-elect NAME [--leader-election-namespace NS]]

With `--leader-elect NAME` several replicas run and only the holder of the coordination.k8s.io
Lease NAME reconciles; the others keep their caches warm and take over within
`controller.leader.LEASE_SECONDS` of the leader stopping. The Lease lives in
`--leader-election-namespace` (default: the pod's own namespace, from POD_NAMESPACE). Without
`--leader-elect` the operator runs alone.

The environment (the chart's Deployment sets it) and these flags become one validated
`controller.settings.OperatorSettings`, built here, once, before anything starts, and passed down;
every setting (its variable or flag, chart value, default and range) is listed there.
"""

from __future__ import annotations

import argparse
import logging


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=8080,
        metavar="PORT",
        help="serve /metrics, /healthz and /readyz on this port (0: don't)",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace", action="append", metavar="NS", help="watch only this namespace (repeatable)"
    )
    scope.add_argument("--all-namespaces", action="store_true", help="watch every namespace (the default)")
    parser.add_argument("--leader-elect", metavar="NAME", help="Lease for leader election among replicas")
    parser.add_argument(
        "--leader-election-namespace",
        metavar="NS",
        help="namespace of the Lease (default: $POD_NAMESPACE, else default)",
    )
    parser.add_argument("--verbose", action="store_true", help="log kopf's own debugging output")


def main(args: argparse.Namespace) -> int:
    import kopf

    from distillery.controller.settings import SettingsError, from_environment

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:  # the environment and the flags, read once; a bad value stops the operator here
        settings = from_environment(
            None,
            metrics_port=args.metrics_port,
            namespaces=args.namespace,
            leader_elect=args.leader_elect,
            leader_election_namespace=args.leader_election_namespace,
        )
    except SettingsError as error:
        for problem in error.problems:
            logging.getLogger("distillery.operator").error("%s", problem)
        return 2
    from distillery.controller import handlers, server

    if not args.verbose:
        # kopf logs every handler call ("Handler 'job_event' succeeded"): one line per watch event.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    handlers.use_settings(settings)
    if settings.metrics_port:
        server.start(settings.metrics_port, handlers.health)
    namespaces = list(settings.namespaces)
    kopf.run(registry=handlers.registry, clusterwide=not namespaces, namespaces=namespaces, standalone=True)
    return 0

"""The client's errors: one line each, naming the object or the cause, so the CLI prints them as they are."""

from __future__ import annotations


class ClientError(Exception):
    """Anything the client cannot do; `str(error)` is one line a person can act on."""


class NotFound(ClientError):
    """The job (or the pods, the report) asked for does not exist."""


class Unreachable(ClientError):
    """No API server answered: a wrong context, a cluster that is down, no kubeconfig."""


class WaitTimeout(ClientError):
    """The job did not reach a terminal phase (or a copy pod did not finish) in time."""

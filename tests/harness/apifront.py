"""The API server as pods reach it: HTTPS with a certificate of a CA made for the test, and a
bearer token required, in front of the emulator (plain HTTP on the loopback).

The official client's in-cluster login (which kopf's login uses) only speaks https to
`https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`, verifying the server against the
mounted `ca.crt`; an API server answers 401 to a request without a valid token. Both are here:
the front listens on an address the pods can reach (the container network's gateway), with a
certificate for that address and the `kubernetes.default.svc` names, and forwards each request
that carries the token to the emulator, streaming the answer (watches stay open). Requests
without it are answered 401 and counted in `rejected`, so a client that forgets its
credentials fails here as it would on a cluster.

With `faults` (a `FrontFaults`, off by default) it also misbehaves as an API server under load or in
a rollout does, seeded so a run can be replayed: about `ratio` of the other requests are answered
500, 429 (with Retry-After) or a timeout (forwarded, then the connection hangs and is closed with
no answer, so a client that gave up may find its write done), and every open watch is ended at
each `watch_seconds` boundary (as the API server ends watches at their timeout or in a restart).

    with serve_api_front(emulator_url, host=gateway) as front:
        access = front.access          # an ApiAccess for the Kubelet
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import random
import secrets
import ssl
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web

from tests.harness.errors import HarnessError
from tests.harness.serviceaccount import ApiAccess

SERVICE_NAMES = [
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
]
# Headers a request keeps on its way to the emulator (kmock reads User-Agent; tests count by it).
FORWARDED = ("content-type", "accept", "user-agent", "authorization")
UNAUTHORIZED = {
    "kind": "Status",
    "apiVersion": "v1",
    "metadata": {},
    "status": "Failure",
    "message": "Unauthorized",
    "reason": "Unauthorized",
    "code": 401,
}


def make_certificates(host: str) -> tuple[str, str, str]:
    """(CA certificate, server certificate, server key), PEM, for an API server at `host` (an IP)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "distillery-test-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    names = [x509.DNSName(n) for n in SERVICE_NAMES] + [x509.IPAddress(ipaddress.ip_address(host))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return ca.public_bytes(pem).decode(), cert.public_bytes(pem).decode(), key_pem.decode()


FAULT_KINDS = ("500", "429", "timeout")


@dataclass
class FrontFaults:
    """The faults the front injects, seeded: which request meets which is drawn from `seed` in the order
    requests arrive. `injected` counts them by kind (and `watch-end`); `log` has one line for each."""

    seed: int
    ratio: float = 0.1  # of the requests that are not watches
    watch_seconds: float = 60.0  # every open watch is ended at each multiple of this, from the start
    hang_seconds: float = 5.0  # a timeout: how long the connection hangs before it is closed
    retry_after_seconds: int = 1  # a 429's Retry-After
    injected: Counter = field(default_factory=Counter)
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self.started = time.monotonic()

    def draw(self) -> str | None:
        """The fault for the next request that is not a watch (one of FAULT_KINDS), or None to serve it."""
        if self._rng.random() >= self.ratio:
            return None
        return self._rng.choice(FAULT_KINDS)

    def watch_end(self, now: float) -> float:
        """When a watch open at `now` (monotonic) is ended: the next `watch_seconds` boundary."""
        elapsed = now - self.started
        return self.started + (int(elapsed // self.watch_seconds) + 1) * self.watch_seconds

    def note(self, kind: str, what: str) -> None:
        self.injected[kind] += 1
        self.log.append(f"{time.monotonic() - self.started:7.1f}s front {kind:9} {what}")


@dataclass
class ApiFront:
    """The running front: what pods need (`access`), and every request it refused."""

    access: ApiAccess
    rejected: list[str] = field(default_factory=list)
    forwarded: int = 0
    faults: FrontFaults | None = None


@contextlib.contextmanager
def serve_api_front(upstream: str, host: str, faults: FrontFaults | None = None) -> Iterator[ApiFront]:
    """The HTTPS front on `host` (any free port), in a thread of its own, for as long as the block runs;
    with `faults`, misbehaving as they say."""
    ca_pem, cert_pem, key_pem = make_certificates(host)
    access = ApiAccess(host=host, port=0, ca_pem=ca_pem, token=secrets.token_urlsafe(32))
    front = ApiFront(access, faults=faults)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.TemporaryDirectory() as directory:
        cert, key = Path(directory) / "tls.crt", Path(directory) / "tls.key"
        cert.write_text(cert_pem)
        key.write_text(key_pem)
        context.load_cert_chain(cert, key)
    ready, box = threading.Event(), {}

    async def run() -> None:
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        app = aiohttp.web.Application(client_max_size=2**26)
        app.router.add_route("*", "/{tail:.*}", _handler(front, upstream.rstrip("/"), session))
        runner = aiohttp.web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1)
        await runner.setup()
        site = aiohttp.web.TCPSite(runner, host, 0, ssl_context=context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        front.access = ApiAccess(host=host, port=port, ca_pem=ca_pem, token=front.access.token)
        box.update(loop=asyncio.get_running_loop(), stop=asyncio.Event())
        ready.set()
        try:
            await box["stop"].wait()
        finally:
            await runner.cleanup()
            await session.close()

    thread = threading.Thread(target=lambda: asyncio.run(run()), name="api-front", daemon=True)
    thread.start()
    if not ready.wait(15):
        raise HarnessError(f"the API server front did not start on {host}")
    try:
        yield front
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(15)


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure"} | {
        "message": message,
        "reason": reason,
        "code": code,
    }


def _handler(front: ApiFront, upstream: str, session: aiohttp.ClientSession) -> Any:
    async def handle(request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip(), front.access.token):
            front.rejected.append(
                f"{request.method} {request.path_qs} ({request.headers.get('User-Agent', '')})"
            )
            return aiohttp.web.json_response(UNAUTHORIZED, status=401)
        front.forwarded += 1
        headers = {k: v for k, v in request.headers.items() if k.lower() in FORWARDED}
        body = await request.read()
        faults = front.faults
        watch = request.query.get("watch") in ("true", "1")
        fault = faults.draw() if faults is not None and not watch else None
        what = f"{request.method} {request.path}"
        if fault == "500":
            faults.note(fault, what)  # type: ignore[union-attr]
            return aiohttp.web.json_response(_status(500, "InternalError", "chaos: injected"), status=500)
        if fault == "429":
            faults.note(fault, what)  # type: ignore[union-attr]
            retry = str(faults.retry_after_seconds)  # type: ignore[union-attr]
            answer = _status(429, "TooManyRequests", "chaos: injected, please retry")
            return aiohttp.web.json_response(answer, status=429, headers={"Retry-After": retry})
        async with session.request(
            request.method, upstream + request.raw_path, data=body or None, headers=headers
        ) as answer:
            if fault == "timeout":
                # Served upstream, but the client never hears: it hangs, then the connection drops.
                await answer.read()
                faults.note(fault, what)  # type: ignore[union-attr]
                await asyncio.sleep(faults.hang_seconds)  # type: ignore[union-attr]
                if request.transport is not None:
                    request.transport.close()
                raise aiohttp.web.HTTPServiceUnavailable()  # never sent: the connection is gone
            response = aiohttp.web.StreamResponse(
                status=answer.status,
                headers={"Content-Type": answer.headers.get("Content-Type", "application/json")},
            )
            await response.prepare(request)
            with contextlib.suppress(ConnectionResetError):
                if watch and faults is not None:
                    if await _stream_until(answer, response, faults.watch_end(time.monotonic())):
                        faults.note("watch-end", what)
                else:
                    async for chunk in answer.content.iter_any():
                        await response.write(chunk)
                await response.write_eof()
            return response

    return handle


async def _stream_until(
    answer: aiohttp.ClientResponse, response: aiohttp.web.StreamResponse, deadline: float
) -> bool:
    """Copy a watch stream until it ends (False) or `deadline` (monotonic) passes (True: the front ended it)."""
    reading = answer.content.iter_any().__aiter__()
    while (left := deadline - time.monotonic()) > 0:
        try:
            chunk = await asyncio.wait_for(reading.__anext__(), left)
        except StopAsyncIteration:
            return False
        except asyncio.TimeoutError:
            return True
        await response.write(chunk)
    return True

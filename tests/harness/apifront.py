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

    with serve_api_front(emulator_url, host=gateway) as front:
        access = front.access          # an ApiAccess for the Kubelet
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import secrets
import ssl
import tempfile
import threading
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


@dataclass
class ApiFront:
    """The running front: what pods need (`access`), and every request it refused."""

    access: ApiAccess
    rejected: list[str] = field(default_factory=list)
    forwarded: int = 0


@contextlib.contextmanager
def serve_api_front(upstream: str, host: str) -> Iterator[ApiFront]:
    """The HTTPS front on `host` (any free port), in a thread of its own, for as long as the block runs."""
    ca_pem, cert_pem, key_pem = make_certificates(host)
    front = ApiFront(ApiAccess(host=host, port=0, ca_pem=ca_pem, token=secrets.token_urlsafe(32)))
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
        async with session.request(
            request.method, upstream + request.raw_path, data=body or None, headers=headers
        ) as answer:
            response = aiohttp.web.StreamResponse(
                status=answer.status,
                headers={"Content-Type": answer.headers.get("Content-Type", "application/json")},
            )
            await response.prepare(request)
            with contextlib.suppress(ConnectionResetError):
                async for chunk in answer.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            return response

    return handle

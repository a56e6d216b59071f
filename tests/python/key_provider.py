"""A token issuer for the tests: signing keys (RSA, EC) made with ``cryptography``,
tokens made with PyJWT, and a real HTTP(S) server of the standard library that serves
the JWKS (``GET /jwks.json``), can rotate it, fail or answer garbage, and counts its
fetches. Stopped by the test (``close``), its thread joined."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import ipaddress
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


class SigningKey:
    """A private key, its ``kid`` and its public half as a JWK and a PEM."""

    def __init__(self, kind: str, kid: str) -> None:
        self.kid = kid
        if kind == "RS256":
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key()))
        elif kind == "ES256":
            self.private = ec.generate_private_key(ec.SECP256R1())
            self.jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.private.public_key()))
        else:
            raise ValueError(kind)
        self.alg = kind
        self.jwk["kid"] = kid
        self.public_pem = self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def token(self, kid: str | None = "", **claims: Any) -> str:
        """A token signed with this key; its header names ``kid`` (this key's by
        default, none with ``None``)."""
        headers = {} if kid is None else {"kid": kid or self.kid}
        return jwt.encode(claims, self.private, algorithm=self.alg, headers=headers)


def hs256_keyed_with(secret: bytes, claims: dict[str, Any], kid: str | None = None) -> str:
    """An HS256 token whose HMAC key is ``secret`` (e.g. a public key PEM: the
    algorithm-confusion forgery, which PyJWT itself refuses to make)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = {"alg": "HS256", "typ": "JWT", **({"kid": kid} if kid else {})}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


class KeyProvider:
    """The JWKS endpoint: ``set_keys`` rotates it, ``mode`` makes it fail
    (``"ok"``, ``"error"``: 500, ``"garbage"``: 200 with a body that is no JWKS),
    ``fetches`` counts the GETs it answered (good or not)."""

    def __init__(self, keys: list[SigningKey], *, max_age: int | None = None, tls: "Tls | None" = None) -> None:
        self.keys = list(keys)
        self.mode = "ok"
        self.max_age = max_age
        self.fetch_times: list[float] = []
        self._lock = threading.Lock()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
                with provider._lock:
                    provider.fetch_times.append(time.monotonic())
                    mode, keys = provider.mode, [k.jwk for k in provider.keys]
                if self.path != "/jwks.json":
                    self.send_error(404)
                    return
                if mode == "error":
                    self.send_error(500)
                    return
                body = b"<html>down for maintenance</html>" if mode == "garbage" else json.dumps({"keys": keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if provider.max_age is not None:
                    self.send_header("Cache-Control", f"public, max-age={provider.max_age}")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        scheme = "http"
        if tls is not None:
            self.server.socket = tls.server_context().wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def set_keys(self, keys: list[SigningKey]) -> None:
        with self._lock:
            self.keys = list(keys)

    @property
    def fetches(self) -> int:
        with self._lock:
            return len(self.fetch_times)

    def since_last_fetch(self) -> float:
        with self._lock:
            return time.monotonic() - self.fetch_times[-1]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class Tls:
    """A test CA and a certificate for 127.0.0.1 that it signed; ``ca_file`` is what
    a client trusts (``SSL_CERT_FILE``)."""

    def __init__(self, directory: Path) -> None:
        now = datetime.datetime.now(datetime.timezone.utc)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wsgate test CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.cert_file = directory / "server.pem"
        self.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.key_file = directory / "server.key"
        self.key_file.write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx

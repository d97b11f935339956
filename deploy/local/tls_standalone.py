"""A standalone redis-server that speaks only TLS, with certificates from a private CA:
the real process TLS options and TLS failures are tried against (tests, bench.refusals)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis

from deploy.local.certificates import Authority, CertificatePair
from deploy.local.processes import find_free_ports


class TLSRedis:
    """`redis-server --port 0 --tls-port P` with `server_cert`; `client_certs` required
    when `mutual` (mTLS). Use as a context manager."""

    def __init__(
        self,
        directory: Path,
        authority: Authority,
        server_cert: CertificatePair,
        *,
        mutual: bool = False,
        client_cert: CertificatePair | None = None,
    ) -> None:
        self.directory = directory
        self.authority = authority
        self.server_cert = server_cert
        self.mutual = mutual
        self.client_cert = client_cert
        self.port = find_free_ports(1)[0]
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> TLSRedis:
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            "redis-server",
            "--bind", "127.0.0.1",
            "--port", "0",
            "--tls-port", str(self.port),
            "--tls-cert-file", str(self.server_cert.cert_file),
            "--tls-key-file", str(self.server_cert.key_file),
            "--tls-ca-cert-file", str(self.authority.ca_file),
            "--tls-auth-clients", "yes" if self.mutual else "no",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
        ]  # fmt: skip
        log = (self.directory / "redis.log").open("wb")
        self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            client = redis.Redis(
                port=self.port,
                ssl=True,
                ssl_ca_certs=str(self.authority.ca_file),
                ssl_certfile=str(self.client_cert.cert_file) if self.client_cert else None,
                ssl_keyfile=str(self.client_cert.key_file) if self.client_cert else None,
                socket_timeout=0.5,
                # Readiness only: the tests judge the certificates, this loop must not.
                ssl_cert_reqs="none",
                ssl_check_hostname=False,
            )
            try:
                client.ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
            finally:
                client.close()

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)

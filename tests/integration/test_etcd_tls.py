"""The etcd store over TLS with client certificates, against a real etcd (Debian's etcd-server)
started with --client-cert-auth on loopback: with the CA and its certificate the store works; a
client without a certificate, or trusting another CA, is refused at the handshake, and the error
says TLS and what to check; options that cannot be right are refused before anything connects."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import ValidationError

from cau.errors import StoreUnavailable
from cau.store.etcd import EtcdOptions, EtcdStore
from cau.store.etcd_gateway import TlsFiles
from tests.contract.test_store import record
from tests.support_etcd import ETCD, free_port


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> tuple[Path, Path]:
    crt, pem = path.with_suffix(".crt"), path.with_suffix(".key")
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    pem.chmod(0o600)
    return crt, pem


def _ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], name: str, *usage: x509.ObjectIdentifier
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca[1].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.ExtendedKeyUsage(list(usage)), critical=False)
        .sign(ca[0], hashes.SHA256())
    )
    return key, cert


class TlsEtcd:
    def __init__(self, root: Path) -> None:
        self.root = root
        ca = _ca("cau test etcd CA")
        self.ca = root / "ca.crt"
        self.ca.write_bytes(ca[1].public_bytes(serialization.Encoding.PEM))
        # etcd 3.4's JSON gateway calls its own gRPC server with the server certificate as a
        # client's: with --client-cert-auth it needs clientAuth too (etcd's own docs say so)
        server = _write(
            root / "server",
            *_leaf(ca, "etcd", ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
        )
        self.client_cert, self.client_key = _write(
            root / "client", *_leaf(ca, "cau", ExtendedKeyUsageOID.CLIENT_AUTH)
        )
        other = _ca("another CA")
        self.other_ca = root / "other-ca.crt"
        self.other_ca.write_bytes(other[1].public_bytes(serialization.Encoding.PEM))
        self.port, peer = free_port(), free_port()
        self.endpoint = f"https://127.0.0.1:{self.port}"
        self._log = (root / "etcd.log").open("wb")
        self.process = subprocess.Popen(
            [
                ETCD, "--name", "tls", "--data-dir", str(root / "data"),
                "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", f"tls=http://127.0.0.1:{peer}",
                "--cert-file", str(server[0]), "--key-file", str(server[1]),
                "--client-cert-auth", "--trusted-ca-file", str(self.ca),
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        trusted = TlsFiles(self.ca, self.client_cert, self.client_key).context()
        while True:
            try:
                ok = httpx.get(self.endpoint + "/health", verify=trusted)
                if ok.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"etcd with TLS did not start: {(root / 'etcd.log').read_text()[-2000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # by its PID
            self.process.wait(timeout=10)
        self._log.close()


@pytest.fixture
def tls_etcd(tmp_path: Path) -> Iterator[TlsEtcd]:
    etcd = TlsEtcd(tmp_path)
    try:
        yield etcd
    finally:
        etcd.stop()


def _store(etcd: TlsEtcd, **tls: object) -> EtcdStore:
    return EtcdStore(
        EtcdOptions.model_validate(
            {"endpoints": [etcd.endpoint], "prefix": f"/t/{uuid.uuid4().hex}/", "timeout": 2, **tls}
        )
    )


def test_the_store_works_over_tls_with_its_client_certificate(tls_etcd: TlsEtcd) -> None:
    store = _store(
        tls_etcd, ca_file=tls_etcd.ca, cert_file=tls_etcd.client_cert, key_file=tls_etcd.client_key
    )

    async def main() -> str | None:
        await store.create_run(record("r1"))
        got = await store.get_run("r1")
        await store.close()
        return got.run_id if got else None

    assert asyncio.run(main()) == "r1"


@pytest.mark.parametrize("who", ["no client certificate", "another CA"])
def test_a_client_the_store_does_not_trust_or_that_does_not_trust_it_is_refused_naming_tls(
    tls_etcd: TlsEtcd, who: str
) -> None:
    if who == "no client certificate":
        store = _store(tls_etcd, ca_file=tls_etcd.ca)
    else:
        store = _store(
            tls_etcd, ca_file=tls_etcd.other_ca, cert_file=tls_etcd.client_cert, key_file=tls_etcd.client_key
        )
    with pytest.raises(StoreUnavailable) as refused:
        asyncio.run(store.get_run("r1"))
    assert "TLS refused" in str(refused.value) and "ca_file, cert_file and key_file" in str(refused.value)


def test_tls_options_that_cannot_be_right_are_refused(tls_etcd: TlsEtcd, tmp_path: Path) -> None:
    def options(**kw: object) -> None:
        EtcdOptions.model_validate({"endpoints": [tls_etcd.endpoint], **kw})

    with pytest.raises(ValidationError, match="go with https://"):
        EtcdOptions.model_validate({"endpoints": ["http://127.0.0.1:2379"], "ca_file": tls_etcd.ca})
    with pytest.raises(ValidationError, match="go together"):
        options(cert_file=tls_etcd.client_cert)
    with pytest.raises(ValidationError, match="is not a file"):
        options(ca_file=tmp_path / "missing.crt")
    exposed = tmp_path / "exposed.key"
    exposed.write_bytes(tls_etcd.client_key.read_bytes())
    exposed.chmod(0o644)
    with pytest.raises(ValidationError, match="readable by others"):
        options(cert_file=tls_etcd.client_cert, key_file=exposed)

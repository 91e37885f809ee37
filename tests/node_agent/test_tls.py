"""The agent's optional TLS listener and ``HttpNodeDriver`` verifying it (no guest boots)."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vm_manager.drivers import NodeUnavailable, VMNotFound
from vm_manager.drivers.http import HttpNodeDriver


@dataclass
class Pki:
    ca: Path
    cert: Path
    key: Path
    other_ca: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(directory: Path, name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True,
        crl_sign=True, encipher_only=False, decipher_only=False,
    )  # fmt: skip
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .sign(key, hashes.SHA256())
    )
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca_key, ca_cert = _ca(tmp_path, "node-ca")
    _ca(tmp_path, "someone-else")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("node-1"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    (tmp_path / "agent.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "agent.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (tmp_path / "agent.key").chmod(0o600)
    return Pki(
        ca=tmp_path / "node-ca.pem",
        cert=tmp_path / "agent.crt",
        key=tmp_path / "agent.key",
        other_ca=tmp_path / "someone-else.pem",
    )


@pytest.fixture
def tls_agent(start_agent, fake_image_dir, pki):
    return start_agent(
        fake_image_dir,
        extra_args=("--tls-cert", str(pki.cert), "--tls-key", str(pki.key)),
        scheme="https",
        verify=ssl.create_default_context(cafile=str(pki.ca)),
    )


async def test_the_driver_talks_https_to_an_agent_signed_by_the_configured_ca(tls_agent, pki):
    driver = tls_agent.driver(ca_file=str(pki.ca))

    health = await driver.health()

    assert tls_agent.url.startswith("https://")
    assert health["running_vms"] == 0
    with pytest.raises(VMNotFound):  # the terminal WebSocket goes over wss with the same checks
        await driver.open_terminal("missing")


async def test_a_certificate_from_an_untrusted_ca_is_refused(tls_agent, pki):
    for driver in (
        tls_agent.driver(ca_file=str(pki.other_ca)),
        tls_agent.driver(),  # the system's CAs do not know a private CA either
    ):
        with pytest.raises(NodeUnavailable):
            await driver.health()
        with pytest.raises(NodeUnavailable):
            await driver.open_terminal("missing")


async def test_plain_http_to_a_tls_agent_gets_nothing(tls_agent):
    plain = HttpNodeDriver(tls_agent.url.replace("https://", "http://"), tls_agent.token, 5)

    with pytest.raises(NodeUnavailable):
        await plain.health()


def test_for_node_uses_the_configured_ca_file(settings, pki):
    class FakeNode:
        agent_url = "https://127.0.0.1:8081"
        auth_token = "node-token"

    settings.NODE_TLS_CA_FILE = str(pki.ca)
    trusting = HttpNodeDriver.for_node(FakeNode())  # type: ignore[arg-type]
    settings.NODE_TLS_CA_FILE = ""
    default = HttpNodeDriver.for_node(FakeNode())  # type: ignore[arg-type]

    assert trusting._tls is not None and trusting._tls.verify_mode == ssl.CERT_REQUIRED
    assert trusting._tls.check_hostname
    assert len(trusting._tls.get_ca_certs()) == 1  # that CA alone
    assert default._tls is not None and default._tls.verify_mode == ssl.CERT_REQUIRED

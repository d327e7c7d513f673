"""Certificates for the TLS cases, made fresh for every run (nothing secret is stored)."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conformance.client_runner import TlsFiles

#: Annex C.5: a client certificate names its node by this URI.
NODE_URI = "urn:pollen:node:"


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_tls_files(folder: Path, *, clients: Sequence[str] = ()) -> TlsFiles:
    """A CA and a server certificate for 127.0.0.1 and localhost, plus an unrelated CA, and
    for each node of `clients` a client certificate naming it (URI urn:pollen:node:NODE_ID)."""
    now = datetime.datetime.now(datetime.UTC)

    def issue(
        subject: str,
        issuer: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None,
        extension: x509.ExtensionType,
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        signer, issuer_name = (
            (key, _name(subject)) if issuer is None else (issuer[0], issuer[1].subject)
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(subject))
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(extension, critical=isinstance(extension, x509.BasicConstraints))
            .sign(signer, hashes.SHA256())
        )
        return key, cert

    authority = x509.BasicConstraints(ca=True, path_length=None)
    ca = issue("Pollen conformance CA", None, authority)
    _, other = issue("Pollen conformance unrelated CA", None, authority)
    server_key, server = issue(
        "localhost",
        ca,
        x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        ),
    )
    pem = serialization.Encoding.PEM
    files = TlsFiles(
        server_cert=folder / "server.pem",
        server_key=folder / "server.key",
        ca=folder / "ca.pem",
        other_ca=folder / "other-ca.pem",
        clients={node: (folder / f"{node}.pem", folder / f"{node}.key") for node in clients},
    )
    files.server_cert.write_bytes(server.public_bytes(pem))
    files.server_key.write_bytes(_pem_key(server_key))
    files.ca.write_bytes(ca[1].public_bytes(pem))
    files.other_ca.write_bytes(other.public_bytes(pem))
    for node, (cert_path, key_path) in files.clients.items():
        names = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(NODE_URI + node)])
        key, cert = issue(node, ca, names)
        cert_path.write_bytes(cert.public_bytes(pem))
        key_path.write_bytes(_pem_key(key))
    return files

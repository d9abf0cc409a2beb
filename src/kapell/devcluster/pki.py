"""The certificates of a dev cluster: one CA, one loopback serving cert, one client cert per user.

Components authenticate as their real identities (``system:kube-scheduler`` ...), so the RBAC
bootstrap roles the apiserver installs are the ones exercised, as on a real cluster. Keys are
ECDSA P-256: fast to make, accepted everywhere in Kubernetes, including for service accounts.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALID = dt.timedelta(days=365)
SERVICE_IP = "10.96.0.1"  # first address of the service range: the ``kubernetes`` Service


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


class Pki:
    """Makes and stores the cluster's keys and certificates in one directory."""

    def __init__(self, directory: Path, now: dt.datetime) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._now = now
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca = CertPair(directory / "ca.crt", directory / "ca.key")
        ca_cert = self._builder(_name("kapell-dev-ca"), self._ca_key.public_key())
        ca_cert = ca_cert.issuer_name(_name("kapell-dev-ca")).add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True
        )
        self._ca_cert = ca_cert.sign(self._ca_key, hashes.SHA256())
        self.ca.cert.write_bytes(self._ca_cert.public_bytes(serialization.Encoding.PEM))
        _write_key(self._ca_key, self.ca.key)

    def _builder(
        self, subject: x509.Name, public_key: ec.EllipticCurvePublicKey
    ) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._now - dt.timedelta(minutes=5))
            .not_valid_after(self._now + _VALID)
        )

    def _issue(self, stem: str, subject: x509.Name, usage: x509.ObjectIdentifier,
               sans: list[x509.GeneralName] | None = None) -> CertPair:  # fmt: skip
        key = ec.generate_private_key(ec.SECP256R1())
        builder = self._builder(subject, key.public_key()).issuer_name(self._ca_cert.subject)
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        pair = CertPair(self.directory / f"{stem}.crt", self.directory / f"{stem}.key")
        cert = builder.sign(self._ca_key, hashes.SHA256())
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, pair.key)
        return pair

    def serving(self) -> CertPair:
        """One serving cert for every component: they all listen on loopback only."""
        sans: list[x509.GeneralName] = [
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes.default.svc"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address(SERVICE_IP)),
        ]
        return self._issue(
            "serving", _name("kapell-dev-apiserver"), ExtendedKeyUsageOID.SERVER_AUTH, sans
        )

    def client(self, user: str, group: str | None = None) -> CertPair:
        """A client cert: the apiserver reads the user from CN and the group from O."""
        stem = user.replace(":", "-")
        return self._issue(stem, _name(user, group), ExtendedKeyUsageOID.CLIENT_AUTH)

    def service_account_key(self) -> CertPair:
        """The key pair that signs service-account tokens (cert field holds the public key)."""
        key = ec.generate_private_key(ec.SECP256R1())
        pair = CertPair(self.directory / "sa.pub", self.directory / "sa.key")
        pair.cert.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        _write_key(key, pair.key)
        return pair

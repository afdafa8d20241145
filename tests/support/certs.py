"""Test certificates: a CA, a server certificate for 127.0.0.1 and client certificates
with chosen common names, written as PEM files."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass
class Pem:
    cert: Path
    key: Path


class CertAuthority:
    def __init__(self, directory: Path, name: str = "kubepd-test-ca") -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            self._builder(subject, self.key.public_key())
            .issuer_name(subject)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.path = self.dir / f"{name}.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    @staticmethod
    def _builder(
        subject: x509.Name, public_key: ec.EllipticCurvePublicKey
    ) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    def issue(
        self, cn: str, *, server: bool = False, name: str | None = None, dns: tuple[str, ...] = ()
    ) -> Pem:
        """`dns`: more names a server certificate carries (beside 127.0.0.1, localhost)."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        # A server certificate is also what a member presents to other members.
        usage = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if server:
            usage.append(ExtendedKeyUsageOID.SERVER_AUTH)
        builder = (
            self._builder(subject, key.public_key())
            .issuer_name(self.cert.subject)
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.DNSName("localhost"),
                        *(x509.DNSName(d) for d in dns),
                    ]
                ),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        stem = self.dir / (name or cn)
        pem = Pem(stem.with_suffix(".crt"), stem.with_suffix(".key"))
        pem.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        pem.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return pem


def secure_channel(address: str, ca: CertAuthority, client: Pem) -> grpc.aio.Channel:
    """A gRPC channel to `address` trusting `ca`, presenting `client`."""
    creds = grpc.ssl_channel_credentials(
        ca.path.read_bytes(), client.key.read_bytes(), client.cert.read_bytes()
    )
    return grpc.aio.secure_channel(address, creds)


def client_context(ca: CertAuthority, client: Pem | None) -> ssl.SSLContext:
    """An HTTPS client context trusting `ca`, presenting `client` if given."""
    ctx = ssl.create_default_context(cafile=str(ca.path))
    if client is not None:
        ctx.load_cert_chain(str(client.cert), str(client.key))
    return ctx


@dataclass
class MemberCerts:
    """What the TLS cluster tests use: a CA, the members' certificate (server and
    client, CN kubepd-member), TiKV's, one with a name not allowed, and one with the
    right name from another CA; `flags` run a kubepd command with them."""

    ca: CertAuthority
    member: Pem
    tikv: Pem
    intruder: Pem
    stranger: Pem

    @classmethod
    def make(cls, directory: Path) -> MemberCerts:
        ca = CertAuthority(directory / "ca")
        return cls(
            ca,
            ca.issue("kubepd-member", server=True),
            ca.issue("tikv"),
            ca.issue("intruder"),
            CertAuthority(directory / "other", "other-ca").issue("tikv"),
        )

    def flags(self) -> list[str]:
        return [
            *("--cacert", str(self.ca.path)),
            *("--cert", str(self.member.cert), "--key", str(self.member.key)),
            *("--cert-allowed-cn", "kubepd-member,tikv"),
        ]

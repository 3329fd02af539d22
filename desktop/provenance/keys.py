"""This installation's signing identity for Content Credentials, made on first use.

Two certificates, both made here: a root that exists only to issue, and the signing
certificate it issues. C2PA validators refuse a self-signed certificate as the signer, so the
signer cannot be its own issuer; neither is trusted by anyone else, so validators report the
signer as untrusted, which is the truth. The identity names no person and no computer
(pictures travel): only "Easel" and a random installation number.

Everything lives in one PEM file (private key, signing certificate, root certificate) in the
data folder's ``keys/`` folder, private to the user (0700 folder, 0600 file), written
atomically so two Easels starting at once both end up with the same identity. A damaged file
is moved aside (never deleted) and a new identity made; pictures signed with the old one stay
verifiable, because each carries its own certificates.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

FOLDER = "keys"
FILE_NAME = "content-credentials.pem"
ORGANISATION = "Easel (self-signed, not verified by anyone)"
_YEARS = datetime.timedelta(days=365)
_EARLIER = datetime.timedelta(days=1)  # a clock a little behind still sees a valid certificate


@dataclass(frozen=True)
class SigningIdentity:
    private_key: bytes  # PEM, PKCS#8
    certificates: bytes  # PEM: the signing certificate, then the root that issued it
    serial_number: int  # of the signing certificate: how a picture is known as ours
    message: str | None = None  # a sentence for the user when a damaged identity was replaced


def identity_path(data_folder: Path) -> Path:
    return Path(data_folder) / FOLDER / FILE_NAME


def load_or_create(data_folder: Path) -> SigningIdentity:
    """The installation's identity: read, or made now (and kept) when there is none."""
    path = identity_path(data_folder)
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return _created(path)
    try:
        return _parsed(text)
    except ValueError:
        aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(path, aside)
        made = _created(path)
        return SigningIdentity(made.private_key, made.certificates, made.serial_number,
                               f"Easel's signing key was damaged, so a new one was made (the "
                               f"old file is kept as '{aside.name}'); pictures signed before "
                               f"stay verifiable.")


def _parsed(text: bytes) -> SigningIdentity:
    """Raises ValueError for anything that is not a usable key with its two certificates."""
    try:
        key = serialization.load_pem_private_key(text, password=None)
        certificates = x509.load_pem_x509_certificates(text)
    except (ValueError, TypeError) as error:
        raise ValueError("damaged") from error
    if not isinstance(key, ec.EllipticCurvePrivateKey) or len(certificates) != 2:
        raise ValueError("damaged")
    signing, root = certificates
    if signing.public_key() != key.public_key() or signing.issuer != root.subject:
        raise ValueError("damaged")
    now = datetime.datetime.now(datetime.UTC)
    if not signing.not_valid_before_utc <= now <= signing.not_valid_after_utc:
        raise ValueError("expired")  # replaced like a damaged one: old pictures still verify
    return SigningIdentity(_key_pem(key), _certificates_pem(signing, root),
                           signing.serial_number)


def _created(path: Path) -> SigningIdentity:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key, signing, root = _new_identity()
    text = _key_pem(key) + _certificates_pem(signing, root)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:  # mkstemp makes the file 0600: the key stays the user's alone
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        try:
            os.link(temporary, path)  # never replaces: a second Easel made one a moment ago
        except FileExistsError:
            return _parsed(path.read_bytes())
    finally:
        Path(temporary).unlink(missing_ok=True)
    return SigningIdentity(_key_pem(key), _certificates_pem(signing, root),
                           signing.serial_number)


def _new_identity() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, x509.Certificate]:
    now = datetime.datetime.now(datetime.UTC)
    installation = secrets.token_hex(4)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = _name(f"Easel installation {installation} root")
    root = (_builder(root_name, root_name, root_key.public_key(), now, 30)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(certificates=True), critical=True)
            .sign(root_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    signing = (_builder(_name(f"Easel installation {installation}"), root_name,
                        key.public_key(), now, 20)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(_usage(certificates=False), critical=True)
               # C2PA wants one of a few purposes on a signer; this is the usual one.
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                              critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   root_key.public_key()), critical=False)
               .sign(root_key, hashes.SHA256()))
    return key, signing, root


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION)])


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
             now: datetime.datetime, years: int) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - _EARLIER).not_valid_after(now + years * _YEARS)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key),
                           critical=False))


def _usage(*, certificates: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=not certificates, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=certificates, crl_sign=certificates,
                         encipher_only=False, decipher_only=False)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _certificates_pem(*certificates: x509.Certificate) -> bytes:
    return b"".join(certificate.public_bytes(serialization.Encoding.PEM)
                    for certificate in certificates)


def fingerprint(identity: SigningIdentity) -> str:
    """A short name of the identity for people: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(identity.certificates).hexdigest()[:16]

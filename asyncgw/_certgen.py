"""Self-signed certificates for asyncgw socket servers (needs ``cryptography``).

The socket server (:mod:`asyncgw.server`) is stdlib-only and the stdlib
cannot make keys, so ``python -m asyncgw serve`` and ``socket//installvia``
make them here. There is no certificate authority: clients pin the
certificate's fingerprint, so the name in it is only a label and its
validity long. The key is ECDSA P-256, which every OpenSSL that Python
3.9 links accepts; key files are written mode 600 and never replaced.
"""

from __future__ import annotations

import datetime
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["make_cert", "make_pem"]

#: Years a certificate is valid: the pin, not the date, is what is checked.
VALID_YEARS = 20


def make_pem() -> tuple[bytes, bytes]:
    """A fresh self-signed certificate and its private key, both PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "asyncgw socket server")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365 * VALID_YEARS))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def make_cert(cert_file: str, key_file: str) -> None:
    """Write a fresh certificate and key to the two paths, mode 600, making
    their directories (mode 700) as needed.

    :raises FileExistsError: if either file exists: a server's identity is
        never replaced behind its clients' pins.
    """
    cert_pem, key_pem = make_pem()
    for path, data in ((key_file, key_pem), (cert_file, cert_pem)):
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)

"""Signing keys: the one PEM private key a promotion signs with, the public key a
consumer verifies with, and the pair ``lineageflow keygen`` writes.

Elliptic-curve P-256, P-384 or P-521 only (what model-signing's key signer and
DSSE's ``ecdsa-sha2-nistp*`` schemes accept). ``LINEAGEFLOW_SIGNING_KEY`` names
the private key; with none set, a pair is generated once in lineageflow's local
state (``$XDG_STATE_HOME/lineageflow/signing``, mode 600, never in a git tree).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from lineageflow.errors import SigningKeyError

KEY_ENV = "LINEAGEFLOW_SIGNING_KEY"
# a certificate for that key (PEM), and the intermediates up to your CA (PEM
# paths, os.pathsep-separated): model-signing's certificate signer
CERT_ENV = "LINEAGEFLOW_SIGNING_CERT"
CHAIN_ENV = "LINEAGEFLOW_SIGNING_CERT_CHAIN"
CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
PRIVATE_NAME, PUBLIC_NAME = "signing.key", "signing.pub"
FIX = f"set {KEY_ENV} to an unencrypted EC P-256 PEM key (lineageflow keygen DIR)"


@dataclass(frozen=True)
class SigningKey:
    path: Path
    private: ec.EllipticCurvePrivateKey
    certificate: Path | None = None
    chain: tuple[Path, ...] = ()

    @property
    def public_pem(self) -> bytes:
        return public_pem(self.private.public_key())

    @property
    def keyid(self) -> str:
        return keyid(self.private.public_key())


def public_pem(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def keyid(key: ec.EllipticCurvePublicKey) -> str:
    """sha256 of the public key's DER: the id a statement's signature names."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SigningKeyError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise SigningKeyError(f"{what} {path} is unreadable ({exc.strerror})") from None


def _curve_ok(key, path: Path, what: str):
    if not isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        kind = type(key).__name__.removeprefix("_").replace("PrivateKey", "")
        raise SigningKeyError(
            f"{what} {path} is not an elliptic-curve key ({kind}): model signing "
            "takes EC P-256, P-384 or P-521 keys (lineageflow keygen DIR)"
        )
    if key.curve.name not in CURVES:
        raise SigningKeyError(
            f"{what} {path} is on curve {key.curve.name}: model signing takes EC "
            "P-256, P-384 or P-521 keys (lineageflow keygen DIR)"
        )
    return key


def load_private(path: str | Path) -> SigningKey:
    """The signing key at ``path``, or one line saying why it cannot sign."""
    path = Path(path).expanduser()
    data = _read(path, "signing key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # "Password was not given but private key is encrypted"
        raise SigningKeyError(
            f"signing key {path} is passphrase-protected: promotion signs unattended; "
            f"{FIX}"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise SigningKeyError(
            f"signing key {path} is not a PEM private key: {FIX}"
        ) from None
    return SigningKey(path, _curve_ok(key, path, "signing key"))


def load_public(path: str | Path) -> ec.EllipticCurvePublicKey:
    """The verifying key at ``path`` (a public key PEM; a private one is refused)."""
    path = Path(path).expanduser()
    data = _read(path, "public key")
    if b"PRIVATE KEY" in data:
        raise SigningKeyError(
            f"{path} is a private key: verify with the public key beside it "
            f"({PUBLIC_NAME})"
        )
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise SigningKeyError(f"public key {path} is not a PEM public key") from None
    return _curve_ok(key, path, "public key")


def keygen(directory: str | Path, curve: str = "P-256") -> tuple[Path, Path]:
    """Write ``signing.key`` (mode 600) and ``signing.pub`` into ``directory``;
    an existing pair is never overwritten."""
    curves = {v: k for k, v in CURVES.items()}
    if curve not in curves:
        raise SigningKeyError(f"curve {curve!r} is not one of {', '.join(curves)}")
    d = Path(directory).expanduser()
    priv, pub = d / PRIVATE_NAME, d / PUBLIC_NAME
    for p in (priv, pub):
        if p.exists():
            raise SigningKeyError(
                f"{p} exists: keygen never overwrites a key; pick another DIR"
            )
    d.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(getattr(ec, curves[curve].upper())())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(priv, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub.write_bytes(public_pem(key.public_key()))
    return priv, pub


def state_dir() -> Path:
    """lineageflow's local state for keys: ``$XDG_STATE_HOME/lineageflow/signing``."""
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base).expanduser() / "lineageflow" / "signing"


def _in_git_tree(path: Path) -> Path | None:
    for p in (path, *path.parents):
        if (p / ".git").exists():
            return p
    return None


def _generate_once(d: Path) -> bool:
    """Make the default pair in ``d`` atomically (workers may start promotions
    at the same moment): a pair is written beside it, then renamed into place;
    the loser of a race keeps the winner's pair. True when this call made it."""
    d.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".signing-", dir=d.parent))
    try:
        keygen(tmp)
        tmp.chmod(0o700)
        os.rename(tmp, d)  # fails when d exists (non-empty): another process won
        return True
    except OSError:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def with_certificate(key: SigningKey) -> SigningKey:
    """``key`` with the certificate ``$LINEAGEFLOW_SIGNING_CERT`` (which must be
    for this very key) and its chain, when one is configured."""
    cert_path = os.environ.get(CERT_ENV, "").strip()
    if not cert_path:
        return key
    cert = Path(cert_path).expanduser()
    try:
        issued = x509.load_pem_x509_certificate(_read(cert, "signing certificate"))
    except ValueError:
        raise SigningKeyError(
            f"signing certificate {cert} is not a PEM certificate"
        ) from None
    if public_pem(issued.public_key()) != key.public_pem:
        raise SigningKeyError(
            f"signing certificate {cert} is not for the signing key {key.path}: "
            f"set {CERT_ENV} to the certificate issued for that key"
        )
    chain = tuple(
        Path(p).expanduser()
        for p in os.environ.get(CHAIN_ENV, "").split(os.pathsep)
        if p.strip()
    )
    for p in chain:
        _read(p, "certificate chain file")
    return SigningKey(key.path, key.private, cert, chain)


def signing_key() -> tuple[SigningKey, bool]:
    """The key promotions sign with, and whether it was generated just now:
    ``$LINEAGEFLOW_SIGNING_KEY``, else the local-state default (made once)."""
    named = os.environ.get(KEY_ENV, "").strip()
    if named:
        return with_certificate(load_private(named)), False
    if os.environ.get(CERT_ENV, "").strip():
        raise SigningKeyError(f"{CERT_ENV} is set but {KEY_ENV} is not: name its key")
    d = state_dir()
    repo = _in_git_tree(d)
    if repo is not None:
        raise SigningKeyError(
            f"the default signing key's directory {d} is inside the git tree {repo}: "
            f"{FIX}, or set XDG_STATE_HOME outside it"
        )
    made = False
    if not (d / PRIVATE_NAME).exists():
        made = _generate_once(d)
    return load_private(d / PRIVATE_NAME), made


def configured_key() -> SigningKey | None:
    """The promotion key if one is configured or was generated; never makes one."""
    named = os.environ.get(KEY_ENV, "").strip()
    if named:
        return with_certificate(load_private(named))
    default = state_dir() / PRIVATE_NAME
    return load_private(default) if default.exists() else None


def public_path() -> Path | None:
    """Where the configured key's public half is (``signing.pub`` beside it, as
    ``lineageflow keygen`` and the default write it), if it is there."""
    named = os.environ.get(KEY_ENV, "").strip()
    priv = Path(named).expanduser() if named else state_dir() / PRIVATE_NAME
    pub = priv.with_name(PUBLIC_NAME)
    return pub if pub.exists() else None

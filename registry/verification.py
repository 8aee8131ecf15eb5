"""Artifact signing and verification.

Standalone on purpose: stdlib + `cryptography` only, no project imports, because the Triton
model export copies this file next to `model.py` (a model folder must be self-contained).

Layout of one signed artifact `X.ptc`:
  X.ptc               the TorchScript archive
  X.manifest.json     canonical JSON: agent, version, sha256, size, feature_spec_hash, signature, ...
  X.manifest.sig      base64 Ed25519 signature over the exact bytes of X.manifest.json
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key


class ArtifactVerificationError(Exception):
    """An artifact is missing, unsigned, tampered with, or does not match what the caller expects."""


def manifest_path_for(artifact: Path) -> Path:
    return artifact.with_suffix(".manifest.json")


def signature_path_for(artifact: Path) -> Path:
    return artifact.with_suffix(".manifest.sig")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def canonical_manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def sign_artifact(artifact: Path, manifest: dict[str, Any], private_key: Ed25519PrivateKey) -> dict[str, Any]:
    """Write X.manifest.json (with the file's sha256 and size) and its signature X.manifest.sig."""
    full = dict(manifest)
    full["sha256"] = sha256_file(artifact)
    full["size"] = artifact.stat().st_size
    full["artifact"] = artifact.name
    body = canonical_manifest_bytes(full)
    manifest_path_for(artifact).write_bytes(body)
    signature_path_for(artifact).write_text(base64.b64encode(private_key.sign(body)).decode() + "\n")
    return full


def verify_artifact(
    artifact: Path,
    public_key_pem: bytes,
    *,
    expected_feature_spec_hash: str | None = None,
    expected_sha256: str | None = None,
) -> dict[str, Any]:
    """Check the signature of the manifest, then the artifact's hash and size against it.

    Returns the manifest. Raises ArtifactVerificationError naming the file and what is wrong.
    """
    manifest_file = manifest_path_for(artifact)
    signature_file = signature_path_for(artifact)
    for required, what in ((artifact, "artifact"), (manifest_file, "manifest"), (signature_file, "signature")):
        if not required.is_file():
            raise ArtifactVerificationError(f"{required}: {what} file missing; refusing an unsigned artifact")
    try:
        public_key = load_pem_public_key(public_key_pem)
    except ValueError as exc:
        raise ArtifactVerificationError(f"trusted public key is not a valid PEM key: {exc}") from exc
    if not isinstance(public_key, Ed25519PublicKey):
        raise ArtifactVerificationError("trusted public key is not an Ed25519 key")
    body = manifest_file.read_bytes()
    try:
        signature = base64.b64decode(signature_file.read_text().strip(), validate=True)
        public_key.verify(signature, body)
    except (InvalidSignature, ValueError) as exc:
        raise ArtifactVerificationError(
            f"{manifest_file}: signature does not verify with the trusted key; manifest tampered or signed by another key"
        ) from exc
    manifest: dict[str, Any] = json.loads(body)
    actual = sha256_file(artifact)
    if actual != manifest.get("sha256"):
        raise ArtifactVerificationError(
            f"{artifact}: sha256 {actual} does not match the signed manifest ({manifest.get('sha256')}); artifact tampered"
        )
    if expected_sha256 is not None and actual != expected_sha256:
        raise ArtifactVerificationError(f"{artifact}: sha256 {actual} is not the registered {expected_sha256}")
    if expected_feature_spec_hash is not None and manifest.get("feature_spec_hash") != expected_feature_spec_hash:
        raise ArtifactVerificationError(
            f"{artifact}: feature spec hash {manifest.get('feature_spec_hash')} != expected {expected_feature_spec_hash}"
        )
    return manifest

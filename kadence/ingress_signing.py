"""Signed commands on ``kadence.requests``, as the SDK has always offered them: defined in
the protocol package (``kadence_protocol.ingress_signing``), which the server checks with."""

from __future__ import annotations

from kadence_protocol.ingress_signing import (
    KEY_ENV,
    MIN_KEY_CHARS,
    PRINCIPAL_ENV,
    PRINCIPAL_HEADER,
    SIGNATURE_HEADER,
    IngressSigner,
    signature,
)

__all__ = ["KEY_ENV", "MIN_KEY_CHARS", "PRINCIPAL_ENV", "PRINCIPAL_HEADER", "SIGNATURE_HEADER", "IngressSigner",
           "signature"]

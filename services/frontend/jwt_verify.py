"""Verification of the API's JWT bearer tokens with PyJWT (HS256, RS256, ES256, ...).

The keys come from the ``jwt`` section of the authentication configuration (auth.py):

- ``hs256_secrets``: shared secrets (32+ characters) for HMAC algorithms;
- ``public_keys``: PEM public keys (RSA or EC), inline text or ``@/path/to/key.pem``;
- ``jwks_file``: a JSON Web Key Set file, read again whenever it changes on disk (its keys
  are matched by the token's ``kid``);
- ``algorithms``: the accepted algorithms. The list comes from the configuration, never
  from the token: a token whose header names another algorithm (``none``, or HS256 signed
  with a public key as the secret) is refused. Default: HS256 when secrets are configured,
  RS256 and ES256 when public keys or a JWKS file are.

A token must carry ``sub`` and ``exp`` (and ``iss``/``aud`` when configured).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from jwt.algorithms import has_crypto
from jwt.types import Options

MIN_SECRET_CHARS = 32
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALGORITHMS = frozenset({"ES256", "ES384", "ES512"})
KNOWN_ALGORITHMS = HMAC_ALGORITHMS | RSA_ALGORITHMS | EC_ALGORITHMS


class JwtConfigError(ValueError):
    """The ``jwt`` section cannot be used."""


class JwtRejected(ValueError):
    """The token does not verify; the message says why (it becomes the 401's message)."""


@dataclass
class _JwksFile:
    """A JWKS file and its keys, read again when its modification time changes."""

    path: Path
    mtime_ns: int = -1
    keys: list[jwt.PyJWK] = field(default_factory=list)

    def current(self) -> list[jwt.PyJWK]:
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except OSError as exc:
            if self.mtime_ns < 0:
                raise JwtConfigError(f"cannot read the JWKS file {self.path}: {exc}") from None
            return self.keys  # gone for a moment (being replaced): keep the last good keys
        if mtime != self.mtime_ns:
            try:
                keyset = jwt.PyJWKSet.from_json(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError, jwt.PyJWTError) as exc:
                if self.mtime_ns < 0:
                    raise JwtConfigError(f"the JWKS file {self.path} is not usable: {exc}") from None
                return self.keys
            self.keys, self.mtime_ns = list(keyset.keys), mtime
        return self.keys


def _family(algorithm: str) -> frozenset[str]:
    for family in (HMAC_ALGORITHMS, RSA_ALGORITHMS, EC_ALGORITHMS):
        if algorithm in family:
            return family
    return frozenset()


@dataclass
class JwtVerifier:
    secrets: tuple[bytes, ...] = ()
    public_keys: tuple[Any, ...] = ()      # cryptography public key objects
    jwks: _JwksFile | None = None
    algorithms: tuple[str, ...] = ("HS256",)
    issuer: str | None = None
    audience: str | None = None
    leeway_s: float = 30.0

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, where: str) -> JwtVerifier:
        secrets = raw.get("hs256_secrets", [])
        if (not isinstance(secrets, list)
                or not all(isinstance(s, str) and len(s) >= MIN_SECRET_CHARS for s in secrets)):
            raise JwtConfigError(f"{where}: jwt.hs256_secrets must list secrets of {MIN_SECRET_CHARS}+ characters")
        pems = raw.get("public_keys", [])
        if not isinstance(pems, list) or not all(isinstance(p, str) for p in pems):
            raise JwtConfigError(f"{where}: jwt.public_keys must list PEM texts (or @file names)")
        if (pems or raw.get("jwks_file")) and not has_crypto:
            raise JwtConfigError(f"{where}: public keys need the cryptography package (PyJWT[crypto])")
        public_keys = tuple(_public_key(p, where) for p in pems)
        jwks = None
        if raw.get("jwks_file") is not None:
            if not isinstance(raw["jwks_file"], str):
                raise JwtConfigError(f"{where}: jwt.jwks_file must be a file name")
            jwks = _JwksFile(Path(raw["jwks_file"]))
            jwks.current()  # a missing or broken file stops the start, not the first call
        if not secrets and not public_keys and jwks is None:
            raise JwtConfigError(f"{where}: jwt needs hs256_secrets (32+ characters), public_keys or jwks_file")
        default = (["HS256"] if secrets else []) + (["RS256", "ES256"] if public_keys or jwks else [])
        algorithms = raw.get("algorithms", default)
        if (not isinstance(algorithms, list) or not algorithms
                or not all(isinstance(a, str) and a in KNOWN_ALGORITHMS for a in algorithms)):
            raise JwtConfigError(f"{where}: jwt.algorithms must list some of {sorted(KNOWN_ALGORITHMS)}")
        leeway = raw.get("leeway_s", 30.0)
        if not isinstance(leeway, int | float) or leeway < 0:
            raise JwtConfigError(f"{where}: jwt.leeway_s must be a non-negative number of seconds")
        for name in ("issuer", "audience"):
            if raw.get(name) is not None and not isinstance(raw[name], str):
                raise JwtConfigError(f"{where}: jwt.{name} must be a string")
        return cls(tuple(s.encode() for s in secrets), public_keys, jwks, tuple(algorithms),
                   raw.get("issuer"), raw.get("audience"), float(leeway))

    def _candidates(self, header: Mapping[str, Any]) -> list[tuple[Any, frozenset[str]]]:
        """The keys that may have signed a token with this header, each with the algorithms
        it may be used with (an HMAC secret never verifies an RSA/EC algorithm and back)."""
        out: list[tuple[Any, frozenset[str]]] = [(s, HMAC_ALGORITHMS) for s in self.secrets]
        out += [(k, RSA_ALGORITHMS | EC_ALGORITHMS) for k in self.public_keys]
        if self.jwks is not None:
            kid = header.get("kid")
            for k in self.jwks.current():
                if kid is None or k.key_id in (None, kid):
                    out.append((k.key, _family(k.algorithm_name) if k.algorithm_name else
                                RSA_ALGORITHMS | EC_ALGORITHMS))
        return out

    def _check_times(self, claims: Mapping[str, Any], now: float) -> None:
        exp, nbf = claims.get("exp"), claims.get("nbf")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise JwtRejected("the JWT's exp must be a number (seconds since the epoch)")
        if now > exp + self.leeway_s:
            raise JwtRejected("the JWT has expired")
        if nbf is not None and (not isinstance(nbf, int | float) or now < nbf - self.leeway_s):
            raise JwtRejected("the JWT is not valid yet (nbf)")

    def verify(self, token: str, now: float) -> dict[str, Any]:
        """The token's claims once it verifies; JwtRejected (with the reason) otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise JwtRejected("the JWT is malformed") from None
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise JwtRejected(f"the JWT's algorithm {alg!r} is not accepted here (accepted: "
                              f"{', '.join(self.algorithms)})")
        # Times are checked below against ``now`` (the authenticator's clock, set by tests).
        options: Options = {"require": ["exp", "sub"], "verify_exp": False, "verify_nbf": False,
                                   "verify_iat": False}
        for key, family in self._candidates(header):
            if alg not in family:
                continue
            try:
                # PyJWT checks the signature before the claims: any error but a bad
                # signature means this key did sign it, and the claims are wrong.
                claims = jwt.decode(token, key, algorithms=[alg], audience=self.audience, issuer=self.issuer,
                                    options=options)
            except (jwt.InvalidSignatureError, jwt.InvalidKeyError):
                continue
            except jwt.PyJWTError as exc:
                raise JwtRejected(_reason(exc)) from None
            self._check_times(claims, now)
            return dict(claims)
        raise JwtRejected("the JWT's signature does not verify with any configured key")


def _reason(exc: jwt.PyJWTError) -> str:
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "the JWT has expired"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "the JWT is not valid yet (nbf/iat)"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "the JWT was issued by another issuer"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "the JWT is meant for another audience"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"the JWT lacks the {exc.claim} claim"
    if isinstance(exc, jwt.DecodeError):
        return "the JWT is malformed"
    return f"the JWT is not valid: {exc}"


def _public_key(text: str, where: str) -> Any:
    pem = text
    if text.startswith("@"):
        try:
            pem = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise JwtConfigError(f"{where}: cannot read the public key {text[1:]}: {exc}") from None
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        return load_pem_public_key(pem.encode())
    except (ValueError, TypeError) as exc:
        raise JwtConfigError(f"{where}: a jwt.public_keys entry is not a PEM public key: {exc}") from None


def jwks_document(keys: Sequence[Mapping[str, Any]]) -> str:
    """A JWKS file's text for ``keys`` (JWK objects), as tests and operators write it."""
    return json.dumps({"keys": list(keys)})

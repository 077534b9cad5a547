#!/usr/bin/env python3
"""Interop check between Usher's JWTs and PyJWT, driven by tests/jwt.rs (`pyjwt_interop`).

Reads a JSON document on stdin:
  {"jwks": {...}, "issuer": "...", "audience": "...",
   "tokens": [{"alg": "EdDSA", "kid": "...", "token": "..."}],      # issued by Usher
   "signers": [{"alg": "ES256", "kid": "...", "pem": "..."},         # keys in Usher's JWKS
               {"alg": "HS256", "kid": "...", "secret_b64url": "..."}],
   "claims": {...}}
Verifies every Usher token with PyJWT against the published JWKS (algorithm pinned to the key's),
signs `claims` with every signer, and prints {"verified": [kid, ...], "signed": [...]} as JSON.
Any verification failure raises, so the script exits non-zero with PyJWT's reason.
"""
import base64
import json
import sys

import jwt


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def main():
    doc = json.load(sys.stdin)
    jwks = jwt.PyJWKSet.from_dict(doc["jwks"])
    by_kid = {k.key_id: k for k in jwks.keys}
    verified = []
    for t in doc["tokens"]:
        header = jwt.get_unverified_header(t["token"])
        assert header["kid"] == t["kid"], header
        assert header["alg"] == t["alg"], header
        key = by_kid[t["kid"]]
        claims = jwt.decode(
            t["token"],
            key=key,
            algorithms=[t["alg"]],
            audience=doc["audience"],
            issuer=doc["issuer"],
            options={"require": ["exp", "iat", "iss", "aud", "sub"]},
        )
        assert claims["sub"] == doc["claims"]["sub"], claims
        verified.append(t["kid"])
    signed = []
    for s in doc["signers"]:
        if s["alg"] == "HS256":
            key = b64url_decode(s["secret_b64url"])
        else:
            key = s["pem"]
        token = jwt.encode(doc["claims"], key, algorithm=s["alg"], headers={"kid": s["kid"]})
        signed.append({"alg": s["alg"], "kid": s["kid"], "token": token})
    json.dump({"verified": verified, "signed": signed, "pyjwt": jwt.__version__}, sys.stdout)


if __name__ == "__main__":
    main()

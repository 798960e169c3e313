"""schemathesis hooks for cairn (issue 18): sign every request as a cairn caller does, and
check what the OpenAPI document alone cannot say.

A cairn request is signed over its exact bytes (DESIGN.md §9, ADR 015,
`cairn_proto::request::RequestToSign`), so the signature is added by a `requests`
authenticator, which sees the request after schemathesis has serialised it: method,
path and query as sent and the body's bytes. This is a second, independent
implementation of the signing format; if it drifted from the node's, every signed
operation would answer 401 and the `cairn_signature_accepted` check below fails.

Environment (set by tests/tests/schemathesis.rs):
  CAIRN_NODE  base URL of the node under test, e.g. https://127.0.0.1:26400
  CAIRN_KEY   key file of a caller registered on the chain (`cairn keygen`, `cairn register`)
  CAIRN_CA    the consortium CA (PEM) that issued the node's certificate

  CAIRN_TALLY  file written at exit: answers by operation and status, signed requests,
               and how many answers each cairn check saw (the test asserts on it)

Checks added to schemathesis's own:
  cairn_error_body          every 4xx/5xx is `application/json` with the documented
                            error body: string `code` and `message` (`ErrorBody`)
  cairn_signature_accepted  no signed request is refused for its signature (401): the
                            key is registered, the nonce fresh, the clock the node's
"""

import atexit
import collections
import json
import os
import secrets
import time
import tomllib
import urllib.parse

import blake3
import requests
import schemathesis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

# Domain labels (cairn_proto::hash::domain).
SIG_REQUEST = b"cairn/sig/request/v2"
KEY_ID = b"cairn/key-id/v1"
# The signature format (cairn_proto::request::VERSION) and its headers.
VERSION = 2
SIGNING_HEADERS = (
    "x-cairn-signature-version",
    "x-cairn-key",
    "x-cairn-timestamp",
    "x-cairn-nonce",
    "x-cairn-signature",
)


def _uleb128(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _bcs_bytes(b: bytes) -> bytes:
    """bcs of a byte string (Hash32 and KeyId serialise as bytes): length, then bytes."""
    return _uleb128(len(b)) + b


def _bcs_str(s: str) -> bytes:
    return _bcs_bytes(s.encode("utf-8"))


def request_to_sign(chain, audience, method, path, query, body, key_id, timestamp_ms, nonce) -> bytes:
    """bcs(RequestToSign): fields in declaration order; the nonce is a fixed 16-byte array."""
    return (
        bytes([VERSION])
        + _bcs_bytes(chain)
        + _bcs_bytes(audience)
        + _bcs_str(method.upper())
        + _bcs_str(path)
        + _bcs_str(query)
        + _bcs_bytes(blake3.blake3(body).digest())
        + _bcs_bytes(key_id)
        + timestamp_ms.to_bytes(8, "little")
        + nonce
    )


class Signer(requests.auth.AuthBase):
    """Adds the five signing headers to a prepared request, for one node of one chain."""

    def __init__(self, key_file: str, node: str, ca: str):
        with open(key_file, "rb") as f:
            seed = bytes.fromhex(tomllib.load(f)["seed"])
        self.key = Ed25519PrivateKey.from_private_bytes(seed)
        public = self.key.public_key().public_bytes_raw()
        self.key_id = blake3.blake3(KEY_ID + public).digest()[:16]
        identity = requests.get(node.rstrip("/") + "/v1/identity", verify=ca, timeout=30).json()
        if identity["signature_version"] != VERSION:
            raise RuntimeError(f"the node signs format {identity['signature_version']}, this hook {VERSION}")
        self.chain = bytes.fromhex(identity["chain"])
        self.audience = bytes.fromhex(identity["node"])

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        body = r.body if r.body is not None else b""
        if isinstance(body, str):
            # Sign the bytes that go on the wire: send the text as UTF-8 bytes.
            body = body.encode("utf-8")
            r.body = body
            r.prepare_content_length(body)
        url = urllib.parse.urlsplit(r.url)
        timestamp_ms = time.time_ns() // 1_000_000
        nonce = secrets.token_bytes(16)
        statement = request_to_sign(
            self.chain, self.audience, r.method, url.path, url.query, body, self.key_id, timestamp_ms, nonce
        )
        signature = self.key.sign(SIG_REQUEST + statement)
        values = (str(VERSION), self.key_id.hex(), str(timestamp_ms), nonce.hex(), signature.hex())
        for name, value in zip(SIGNING_HEADERS, values):
            r.headers[name] = value
        _TALLY["signed"] += 1
        return r


_SIGNER = None
_TALLY = {"answers": collections.Counter(), "signed": 0, "checked": collections.Counter()}


@atexit.register
def _write_tally():
    path = os.environ.get("CAIRN_TALLY")
    if path:
        answers = collections.defaultdict(dict)
        for (operation, status), n in sorted(_TALLY["answers"].items()):
            answers[operation][str(status)] = n
        with open(path, "w") as f:
            json.dump({"answers": answers, "signed": _TALLY["signed"], "checked": _TALLY["checked"]}, f, indent=1)


def _signer() -> Signer:
    global _SIGNER
    if _SIGNER is None:
        _SIGNER = Signer(os.environ["CAIRN_KEY"], os.environ["CAIRN_NODE"], os.environ["CAIRN_CA"])
    return _SIGNER


@schemathesis.hook
def before_load_schema(context, raw_schema):
    """The signing headers are the signature's, like an Authorization header: the
    authenticator sets them on every request, so they are not generated as data."""
    for item in raw_schema.get("paths", {}).values():
        for operation in item.values():
            if isinstance(operation, dict) and "parameters" in operation:
                operation["parameters"] = [
                    p for p in operation["parameters"] if not (p.get("in") == "header" and p.get("name") in SIGNING_HEADERS)
                ]


@schemathesis.hook
def before_call(context, case, kwargs):
    """Signs the request when schemathesis put the security scheme's header on it: its
    own value is a placeholder the signature replaces. Without it (a case testing a
    missing signature, an unsigned route), the request goes unsigned."""
    headers = {name.lower() for name in (case.headers or {})}
    if "x-cairn-signature" in headers:
        kwargs["auth"] = _signer()


@schemathesis.hook
def after_call(context, case, response):
    _TALLY["answers"][(case.operation.label, response.status_code)] += 1


def _signed(case) -> bool:
    return bool(case.operation.definition.raw.get("security"))


@schemathesis.check
def cairn_error_body(ctx, response, case):
    """A refused request gets the documented error body (ErrorBody in the document)."""
    _TALLY["checked"]["cairn_error_body"] += 1
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    if not content_type.startswith("application/json"):
        raise AssertionError(f"{response.status_code} answered as {content_type!r}, not the JSON error body")
    body = response.json()
    if not (isinstance(body, dict) and isinstance(body.get("code"), str) and isinstance(body.get("message"), str)):
        raise AssertionError(f"{response.status_code} body is not an error body with `code` and `message`: {body!r}")
    return True


@schemathesis.check
def cairn_signature_accepted(ctx, response, case):
    """The hook's signatures verify: a signed request is never refused as unauthenticated."""
    _TALLY["checked"]["cairn_signature_accepted"] += 1
    signed = response.request.headers.get("x-cairn-signature") is not None
    if _signed(case) and signed and response.status_code == 401:
        raise AssertionError(f"a signed request was refused: {response.text[:300]}")
    return True

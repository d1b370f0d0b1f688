"""services/kit/token.py: client JWTs, verified locally by the room (docs/protocol.md §4.1)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pushwire_protocol.errors import AuthError, ConfigError
from services.kit import token
from tests.vectors import load, named

NOW = 1_700_000_000.0
SECRET = "s3cret-of-the-chat-app-32-bytes!"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"

EC_KEY = ec.generate_private_key(ec.SECP256R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def claims(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"sub": "u1", "app": "chat", "iat": int(NOW), "exp": int(NOW) + 60}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def _verify(tok: str, keys: token.Keys | None = None, *, uid: str = "u1",
            device: str = "phone", now: float = NOW, leeway_s: int = 0) -> token.Claims:
    return token.verify(keys or token.Keys((SECRET,)), tok, app="chat", uid=uid, device=device,
                        now=now, leeway_s=leeway_s)


def test_minted_token_is_a_jwt_with_the_secret_kid() -> None:
    tok = token.mint(SECRET, "chat", "u1", now=NOW, ttl_s=60, device="phone")
    assert jwt.get_unverified_header(tok) == {"alg": "HS256", "kid": token.secret_kid(SECRET),
                                              "typ": "JWT"}
    assert jwt.decode(tok, SECRET, algorithms=["HS256"], options={"verify_exp": False}) == {
        "sub": "u1", "app": "chat", "dev": "phone", "iat": int(NOW), "exp": int(NOW) + 60}
    assert _verify(tok) == token.Claims("chat", "u1", "phone", int(NOW) + 60, int(NOW))


def _docs_vector() -> dict[str, str]:
    """The test vector of docs/protocol.md §4.1: `name: value` lines of its vector block."""
    text = DOCS.read_text()
    block = text.split("<!-- token test vector -->", 1)[1].split("```", 2)[1]
    return dict(re.findall(r"^(\w+): +(.+)$", block, re.M))


def test_the_docs_test_vector_is_what_mint_and_pyjwt_produce() -> None:
    vector = _docs_vector()
    header, claims_text = json.loads(vector["header"]), json.loads(vector["claims"])
    # The documented token is the documented header and claims, signed as documented ...
    signing_input = ".".join(_b64(vector[p].encode()) for p in ("header", "claims"))
    assert signing_input == vector["signing_input"]
    mac = hmac.new(vector["secret"].encode(), signing_input.encode(), hashlib.sha256).digest()
    assert _b64(mac) == vector["signature"]
    assert vector["token"] == f"{signing_input}.{vector['signature']}"
    assert header["kid"] == vector["kid"] == token.secret_kid(vector["secret"])
    assert jwt.decode(vector["token"], vector["secret"], algorithms=["HS256"],
                      options={"verify_exp": False}) == claims_text
    # ... exactly what `pushwire token` mints for those claims ...
    minted = token.mint(vector["secret"], claims_text["app"], claims_text["sub"],
                        now=claims_text["iat"], ttl_s=claims_text["exp"] - claims_text["iat"],
                        device=claims_text["dev"])
    assert minted == vector["token"]
    # ... and the room accepts it.
    assert token.verify(token.Keys((vector["secret"],)), vector["token"], app="demo",
                        uid="alice", device="phone", now=claims_text["iat"]).issued == \
        claims_text["iat"]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_a_token_of_pyjwt_alone_verifies_with_aud_and_no_kid() -> None:
    tok = jwt.encode(claims(app=None, aud="chat", nbf=int(NOW) - 1), SECRET, algorithm="HS256")
    assert _verify(tok, device="").uid == "u1"
    listed = jwt.encode(claims(app=None, aud=["other", "chat"]), SECRET, algorithm="HS256")
    assert _verify(listed).app == "chat"


def test_any_listed_secret_verifies_and_a_kid_picks_one() -> None:
    keys = token.Keys(("old-secret", SECRET))
    assert _verify(token.mint("old-secret", "chat", "u1", now=NOW), keys).uid == "u1"
    assert _verify(jwt.encode(claims(), "old-secret", algorithm="HS256"), keys).uid == "u1"
    unknown = jwt.encode(claims(), SECRET, algorithm="HS256", headers={"kid": "nope"})
    with pytest.raises(AuthError, match=re.escape(token.UNKNOWN_KID)):
        _verify(unknown, keys)
    wrong = jwt.encode(claims(), "old-secret", algorithm="HS256",
                       headers={"kid": token.secret_kid(SECRET)})
    with pytest.raises(AuthError, match=token.BAD_SIGNATURE):
        _verify(wrong, keys)


def test_es256_and_rs256_verify_with_public_keys_only_of_their_type() -> None:
    keys = token.Keys(public={"ec": token.load_public_key(pem(EC_KEY)),
                              "rsa": token.load_public_key(pem(RSA_KEY))})
    assert _verify(jwt.encode(claims(), EC_KEY, algorithm="ES256", headers={"kid": "ec"}),
                   keys).uid == "u1"
    assert _verify(jwt.encode(claims(), RSA_KEY, algorithm="RS256"), keys).uid == "u1"
    # An RSA key named by an ES256 token's kid is not tried: no key of that alg has that kid.
    with pytest.raises(AuthError, match=re.escape(token.UNKNOWN_KID)):
        _verify(jwt.encode(claims(), EC_KEY, algorithm="ES256", headers={"kid": "rsa"}), keys)
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(AuthError, match=token.BAD_SIGNATURE):
        _verify(jwt.encode(claims(), other, algorithm="ES256"), keys)
    with pytest.raises(AuthError, match=token.BAD_SIGNATURE):      # HS256 with no secret
        _verify(jwt.encode(claims(), SECRET, algorithm="HS256"), keys)


def test_alg_confusion_and_none_are_refused() -> None:
    public_pem = pem(RSA_KEY)
    # HS256 "signed" with the public key's PEM text: never verified against a public key.
    forged = _forge({"alg": "HS256", "typ": "JWT"}, claims(), public_pem.encode())
    keys = token.Keys(public={"rsa": token.load_public_key(public_pem)})
    with pytest.raises(AuthError, match=token.BAD_SIGNATURE):
        _verify(forged, keys)
    unsigned = ".".join((_b64(json.dumps({"alg": "none"}).encode()),
                         _b64(json.dumps(claims()).encode()), ""))
    for tok in (unsigned, jwt.encode(claims(), SECRET, algorithm="HS384"),
                jwt.encode(claims(), RSA_KEY, algorithm="PS256")):
        with pytest.raises(AuthError, match=re.escape(token.UNSUPPORTED_ALG)):
            _verify(tok, token.Keys((SECRET,), keys.public))


def _forge(header: dict[str, Any], body: dict[str, Any], key: bytes) -> str:
    signing = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(body).encode())}"
    return f"{signing}.{_b64(hmac.new(key, signing.encode(), hashlib.sha256).digest())}"


@pytest.mark.parametrize(("body", "uid", "device", "message"), [
    (claims(app="other"), "u1", "phone", token.WRONG_APP),
    (claims(app=None, aud="other"), "u1", "phone", token.WRONG_APP),
    (claims(app=None, aud=["a", "b"]), "u1", "phone", token.WRONG_APP),
    (claims(), "u2", "phone", token.WRONG_USER),
    (claims(dev="tablet"), "u1", "phone", token.WRONG_DEVICE),
    (claims(exp=int(NOW) - 1), "u1", "phone", token.EXPIRED),
    (claims(nbf=int(NOW) + 1), "u1", "phone", token.NOT_YET_VALID),
    (claims(iat=int(NOW) + 1), "u1", "phone", token.NOT_YET_VALID),
    (claims(sub=None), "u1", "phone", "sub must be"),
    (claims(sub=""), "u1", "phone", "sub must be"),
    (claims(exp=None), "u1", "phone", "exp must be"),
    (claims(iat="now"), "u1", "phone", "iat must be"),
    (claims(exp=True), "u1", "phone", "exp must be"),
    (claims(app=None), "u1", "phone", "app \\(or aud\\)"),
    (claims(dev=7), "u1", "phone", "dev must be"),
])
def test_each_wrong_claim_has_its_error(body: dict[str, Any], uid: str, device: str,
                                        message: str) -> None:
    with pytest.raises(AuthError, match=message):
        _verify(jwt.encode(body, SECRET, algorithm="HS256"), uid=uid, device=device)


def test_leeway_stretches_exp_nbf_and_iat_both_ways() -> None:
    late = jwt.encode(claims(exp=int(NOW) - 30), SECRET, algorithm="HS256")
    early = jwt.encode(claims(nbf=int(NOW) + 30, iat=int(NOW) + 30), SECRET, algorithm="HS256")
    assert _verify(late, leeway_s=30).expires == int(NOW) - 30
    assert _verify(early, leeway_s=30).not_before == int(NOW) + 30
    with pytest.raises(AuthError, match=token.EXPIRED):
        _verify(late, leeway_s=29)
    with pytest.raises(AuthError, match=token.NOT_YET_VALID):
        _verify(early, leeway_s=29)
    at_exp = jwt.encode(claims(exp=int(NOW)), SECRET, algorithm="HS256")
    assert _verify(at_exp).expires == int(NOW)             # valid up to exp itself


NO_ALG = _b64(b"{}") + ".e30.sig"
KID_NUMBER = _b64(json.dumps({"alg": "HS256", "kid": 3}).encode()) + ".e30.sig"


@pytest.mark.parametrize("text", ["", "abc", "a.b.c", "v1.e30.AAAA", "x" * 50, NO_ALG,
                                  KID_NUMBER])
def test_malformed_tokens_are_refused_as_malformed(text: str) -> None:
    with pytest.raises(AuthError) as caught:
        _verify(text)
    assert caught.value.message.startswith((token.MALFORMED, token.UNSUPPORTED_ALG))


def test_a_known_header_does_not_excuse_the_rest_of_a_token() -> None:
    # Headers are decoded once per distinct header (token._header is cached): a refusal is
    # not cached away, and the other parts are still checked for every token.
    good = token.mint(SECRET, "chat", "u1", now=NOW, device="phone")
    head = good.split(".")[0]
    _verify(good)
    for bad in (f"{head}.e30!.sig", f"{head}.e30.s=g", f"{head}.e30"):
        with pytest.raises(AuthError, match=token.MALFORMED):
            _verify(bad)
    for _ in range(2):
        with pytest.raises(AuthError):
            _verify(NO_ALG)


def test_a_payload_that_is_not_json_is_malformed() -> None:
    head = _b64(json.dumps({"alg": "HS256"}).encode())
    body = _b64(b"not json")
    mac = _b64(hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
    with pytest.raises(AuthError, match=token.MALFORMED):
        _verify(f"{head}.{body}.{mac}")


def test_public_keys_must_be_pem_rsa_2048_or_p256() -> None:
    assert isinstance(token.load_public_key(pem(EC_KEY)), ec.EllipticCurvePublicKey)
    for bad in ("not a key", pem(ec.generate_private_key(ec.SECP384R1())),
                pem(rsa.generate_private_key(public_exponent=65537, key_size=1024))):
        with pytest.raises(ConfigError):
            token.load_public_key(bad)


# The conformance vectors (conformance/tokens.json): what every backend and client checks.

TOKENS = load("tokens")


@pytest.mark.parametrize("vector", named(TOKENS["secret_kids"]))
def test_conformance_secret_kids(vector: dict[str, Any]) -> None:
    assert token.secret_kid(vector["secret"]) == vector["kid"]


@pytest.mark.parametrize("vector", named(TOKENS["mint"]))
def test_conformance_mint_gives_the_token_of_the_file(vector: dict[str, Any]) -> None:
    assert token.mint(vector["secret"], vector["app"], vector["uid"], now=vector["now"],
                      ttl_s=vector["ttl_s"], device=vector["device"]) == vector["token"]


def _conformance_keys(vector: dict[str, Any], kid: str | None) -> token.Keys:
    if vector["alg"] == "HS256":
        return token.Keys((vector["key"],))
    pem_text = TOKENS["keys"][vector["key"]]["public_pem"]
    return token.Keys(public={kid or "any": token.load_public_key(pem_text)})


@pytest.mark.parametrize("vector", named(TOKENS["sign"]))
def test_conformance_signed_tokens_parse_and_verify(vector: dict[str, Any]) -> None:
    parsed = token.parse(vector["token"])
    assert parsed.signing_input.decode() == vector["signing_input"]
    assert parsed.claims.decode() == vector["claims_json"]
    assert _b64(parsed.signature) == vector["signature"]
    claims_of = json.loads(vector["claims_json"])
    app = claims_of.get("app") or claims_of["aud"][0]
    assert token.verify(_conformance_keys(vector, parsed.kid), parsed, app=app,
                        uid=claims_of["sub"], device=claims_of.get("dev", ""),
                        now=claims_of["iat"]).issued == claims_of["iat"]


def test_conformance_keys_are_the_test_keys_of_their_algorithm() -> None:
    for name, key in TOKENS["keys"].items():
        assert key["test_only"] and name.startswith("test-only-")
        public = token.load_public_key(key["public_pem"])
        assert token.algorithm_of(public) == key["alg"]
        private = serialization.load_pem_private_key(key["private_pem"].encode(), None)
        assert pem(private) == key["public_pem"]  # type: ignore[arg-type]


LIFETIME = "token lifetime exceeds the app's token_max_ttl_s"   # the room's check (admission)


@pytest.mark.parametrize("vector", named([v for v in TOKENS["verify"]
                                          if v["expect"].get("reason") != LIFETIME]))
def test_conformance_verify_cases(vector: dict[str, Any]) -> None:
    app = TOKENS["apps"][vector["app"]]
    keys = token.Keys(tuple(app["secrets"]), {
        kid: token.load_public_key(TOKENS["keys"][name]["public_pem"])
        for kid, name in app["token_keys"].items()})
    expect = vector["expect"]
    try:
        claims_of = token.verify(keys, vector["token"], app=vector["app"], uid=vector["uid"],
                                 device=vector["device"], now=vector["now"],
                                 leeway_s=app["token_leeway_s"])
    except AuthError as exc:
        assert not expect["ok"] and (exc.message, exc.code) == (expect["reason"],
                                                                expect["error_code"])
        return
    assert expect["ok"] and expect["claims"] == {
        "app": claims_of.app, "uid": claims_of.uid, "device": claims_of.device,
        "iat": claims_of.issued, "exp": claims_of.expires, "nbf": claims_of.not_before}

"""PKCE S256 against RFC 7636's own example (Appendix B)."""

from __future__ import annotations

from quart_api.oauth.pkce import s256_challenge, verifier_matches

RFC_VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
RFC_CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_s256_challenge_matches_rfc_7636_appendix_b() -> None:
    assert s256_challenge(RFC_VERIFIER) == RFC_CHALLENGE
    assert verifier_matches(RFC_VERIFIER, RFC_CHALLENGE)


def test_malformed_or_wrong_verifiers_never_match() -> None:
    assert not verifier_matches(RFC_VERIFIER[:-1], RFC_CHALLENGE)
    assert not verifier_matches(RFC_CHALLENGE, RFC_CHALLENGE)
    assert not verifier_matches("a" * 42, s256_challenge("a" * 42)), "shorter than 43"
    assert not verifier_matches("a" * 129, s256_challenge("a" * 129)), "longer than 128"
    assert not verifier_matches("a b" * 20, s256_challenge("a b" * 20)), "not unreserved"

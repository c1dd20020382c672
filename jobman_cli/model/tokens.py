"""Callback tokens: what a store keeps of them and how a presented one is checked.

A token is the bearer secret an instance presents when it reports (DESIGN.md section 6). It
exists in clear only in the user-data and the claiming daemon's memory; stores keep its hash.
Hashing and checking live side by side so they cannot drift apart.
"""

from __future__ import annotations

# hashlib/hmac are imported inside the functions: loading libcrypto (_hashlib) costs 1-10 ms, and
# the commands that never see a token (status, list, schedule) import this module via the model.


def hash_callback_token(token: str) -> str:
    """What a store keeps of a callback token: its SHA-256, hex. The token itself is 32 random
    bytes, so a plain hash is enough (nothing to brute-force), and a reader of the store who sees
    the hash cannot present it as the token."""
    import hashlib

    return hashlib.sha256(token.encode("utf-8", "backslashreplace")).hexdigest()


def callback_token_matches(token: str, hashes: "tuple[str, ...] | list[str]") -> bool:
    """Constant-time check of a presented token against an attempt's stored hashes."""
    import hmac

    presented = hash_callback_token(token).encode()
    matched = False
    for expected in hashes:
        # compare every hash (no early exit) so the time says nothing about which one matched
        matched |= bool(expected) and hmac.compare_digest(presented, str(expected).encode())
    return matched

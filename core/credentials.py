"""Pure rules about secrets and addresses, shared by the settings and the logs.

Nothing here reads the environment (core/settings.py does): the settings put
passwords from secret files into URLs, refuse a guessable SECRET_KEY and a
development key on a network address, and the processes print URLs with the
password hidden.
"""

from __future__ import annotations

import ipaddress
import math
import zlib
from collections import Counter
from urllib.parse import quote, urlsplit, urlunsplit


def with_password(url: str, password: str | None) -> str:
    """`url` with `password` added (URL-quoted) when it has a host and no password of its own."""
    parts = urlsplit(url)
    if not password or not parts.hostname or parts.password is not None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(
        netloc=f"{parts.username or ''}:{quote(password, safe='')}@{host}"))


def redacted(url: str) -> str:
    """`url` with its password replaced by ***, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user.partition(':')[0]}:***@{host}"))


def secret_bits(secret: str) -> float:
    """A cautious estimate of the randomness in `secret`, in bits: the least of two
    guesses, each blind to what the other catches. The characters' Shannon entropy
    times the length of its raw deflate stream (the symbols left once repeats are
    taken out) catches a small alphabet ("a" x 32) and any repeated piece (a word
    or a phrase repeated); the entropy of the steps between neighbouring
    characters, times the length, catches runs ("abcdef...", "abab...").
    secrets.token_urlsafe(48) scores about 340, token_hex(32) about 200."""
    if not secret:
        return 0.0
    steps = [ord(b) - ord(a) for a, b in zip(secret, secret[1:], strict=False)]
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = compressor.compress(secret.encode()) + compressor.flush()
    return min(len(deflated) * _shannon(secret), len(secret) * _shannon(steps))


def _shannon(items) -> float:
    counts = Counter(items)
    total = sum(counts.values())
    return -sum(n / total * math.log2(n / total) for n in counts.values()) if total else 0.0


def loopback(host: str) -> bool:
    """Only this machine can reach `host`: localhost, 127.0.0.0/8 or ::1."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

"""The server side of NTLM over HTTP, just enough for the EWS sandbox.

`challenge_message(negotiate)` builds a CHALLENGE (type 2) message answering a client's
NEGOTIATE (type 1); `parse_authenticate(token)` reads the user, domain and NT response
out of an AUTHENTICATE (type 3) message; `verify_ntlmv2(...)` checks an NTLMv2 response
against a password (MS-NLMP 3.3.2). MD4 is not in OpenSSL 3's default provider, so it is
implemented here from RFC 1320.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import time
from dataclasses import dataclass

__all__ = ["Authenticate", "challenge_message", "md4", "message_type", "parse_authenticate", "verify_ntlmv2"]

SIGNATURE = b"NTLMSSP\x00"

# NegotiateFlags (MS-NLMP 2.2.2.5) that this server is willing to echo back.
_UNICODE = 0x00000001
_REQUEST_TARGET = 0x00000004
_SIGN = 0x00000010
_SEAL = 0x00000020
_NTLM = 0x00000200
_ALWAYS_SIGN = 0x00008000
_TARGET_TYPE_DOMAIN = 0x00010000
_EXTENDED_SESSIONSECURITY = 0x00080000
_TARGET_INFO = 0x00800000
_VERSION = 0x02000000
_128 = 0x20000000
_KEY_EXCH = 0x40000000
_56 = 0x80000000
_ECHOED = (
    _UNICODE | _REQUEST_TARGET | _SIGN | _SEAL | _NTLM | _ALWAYS_SIGN | _EXTENDED_SESSIONSECURITY
    | _VERSION | _128 | _KEY_EXCH | _56
)

DOMAIN = "SANDBOX"
COMPUTER = "EWS"


def message_type(token: bytes) -> int | None:
    """The NTLM message type (1, 2 or 3) of `token`, or None when it is not an NTLM message."""
    if len(token) < 12 or not token.startswith(SIGNATURE):
        return None
    return int(struct.unpack_from("<I", token, 8)[0])


def _av_pair(av_id: int, value: bytes) -> bytes:
    return struct.pack("<HH", av_id, len(value)) + value


def challenge_message(negotiate: bytes, server_challenge: bytes | None = None) -> tuple[bytes, bytes]:
    """A CHALLENGE message for the NEGOTIATE `negotiate`, and the 8-byte server challenge in it."""
    client_flags = struct.unpack_from("<I", negotiate, 12)[0] if len(negotiate) >= 16 else _UNICODE | _NTLM
    challenge = server_challenge or os.urandom(8)
    flags = (client_flags & _ECHOED) | _UNICODE | _NTLM | _TARGET_TYPE_DOMAIN | _TARGET_INFO
    target_name = DOMAIN.encode("utf-16-le")
    # FILETIME: 100 ns ticks since 1601-01-01.
    filetime = int((time.time() + 11644473600) * 10_000_000)
    target_info = b"".join([
        _av_pair(2, DOMAIN.encode("utf-16-le")),
        _av_pair(1, COMPUTER.encode("utf-16-le")),
        _av_pair(4, "sandbox.local".encode("utf-16-le")),
        _av_pair(3, "ews.sandbox.local".encode("utf-16-le")),
        _av_pair(7, struct.pack("<Q", filetime)),
        _av_pair(0, b""),
    ])
    header_len = 56
    name_offset = header_len
    info_offset = name_offset + len(target_name)
    message = (
        SIGNATURE
        + struct.pack("<I", 2)
        + struct.pack("<HHI", len(target_name), len(target_name), name_offset)
        + struct.pack("<I", flags)
        + challenge
        + b"\x00" * 8
        + struct.pack("<HHI", len(target_info), len(target_info), info_offset)
        + bytes([10, 0]) + struct.pack("<H", 20348) + b"\x00\x00\x00\x0f"  # version 10.0.20348, NTLM rev 15
        + target_name
        + target_info
    )
    return message, challenge


@dataclass(frozen=True)
class Authenticate:
    """What the server needs from an AUTHENTICATE message."""

    user: str
    domain: str
    nt_response: bytes


def parse_authenticate(token: bytes) -> Authenticate:
    """The user, domain and NT response in AUTHENTICATE `token`; raises ValueError when malformed."""
    if message_type(token) != 3 or len(token) < 64:
        raise ValueError("not an NTLM AUTHENTICATE message")
    flags = struct.unpack_from("<I", token, 60)[0]

    def field(offset: int) -> bytes:
        length, _max, start = struct.unpack_from("<HHI", token, offset)
        if start + length > len(token):
            raise ValueError("NTLM field out of range")
        return token[start:start + length]

    encoding = "utf-16-le" if flags & _UNICODE else "cp437"
    return Authenticate(
        user=field(36).decode(encoding),
        domain=field(28).decode(encoding),
        nt_response=field(20),
    )


def verify_ntlmv2(auth: Authenticate, password: str, server_challenge: bytes) -> bool:
    """True when `auth` carries an NTLMv2 response computed from `password` for `server_challenge`."""
    if len(auth.nt_response) <= 24:
        return False  # NTLMv1/LM: refused, as modern servers do
    proof, blob = auth.nt_response[:16], auth.nt_response[16:]
    nt_hash = md4(password.encode("utf-16-le"))
    ntowf_v2 = hmac.new(nt_hash, (auth.user.upper() + auth.domain).encode("utf-16-le"), hashlib.md5).digest()
    expected = hmac.new(ntowf_v2, server_challenge + blob, hashlib.md5).digest()
    return hmac.compare_digest(expected, proof)


def _rotl(value: int, shift: int) -> int:
    value &= 0xFFFFFFFF
    return ((value << shift) | (value >> (32 - shift))) & 0xFFFFFFFF


def md4(data: bytes) -> bytes:
    """The MD4 digest of `data` (RFC 1320)."""
    message = bytearray(data)
    bit_length = (8 * len(data)) & 0xFFFFFFFFFFFFFFFF
    message.append(0x80)
    while len(message) % 64 != 56:
        message.append(0)
    message += struct.pack("<Q", bit_length)
    a, b, c, d = 0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476
    for block in range(0, len(message), 64):
        x = struct.unpack_from("<16I", message, block)
        aa, bb, cc, dd = a, b, c, d

        def f(u: int, v: int, w: int) -> int:
            return (u & v) | (~u & w)

        def g(u: int, v: int, w: int) -> int:
            return (u & v) | (u & w) | (v & w)

        def h(u: int, v: int, w: int) -> int:
            return u ^ v ^ w

        for i in (0, 4, 8, 12):
            a = _rotl(a + f(b, c, d) + x[i], 3)
            d = _rotl(d + f(a, b, c) + x[i + 1], 7)
            c = _rotl(c + f(d, a, b) + x[i + 2], 11)
            b = _rotl(b + f(c, d, a) + x[i + 3], 19)
        for i in (0, 1, 2, 3):
            a = _rotl(a + g(b, c, d) + x[i] + 0x5A827999, 3)
            d = _rotl(d + g(a, b, c) + x[i + 4] + 0x5A827999, 5)
            c = _rotl(c + g(d, a, b) + x[i + 8] + 0x5A827999, 9)
            b = _rotl(b + g(c, d, a) + x[i + 12] + 0x5A827999, 13)
        for i in (0, 2, 1, 3):
            a = _rotl(a + h(b, c, d) + x[i] + 0x6ED9EBA1, 3)
            d = _rotl(d + h(a, b, c) + x[i + 8] + 0x6ED9EBA1, 9)
            c = _rotl(c + h(d, a, b) + x[i + 4] + 0x6ED9EBA1, 11)
            b = _rotl(b + h(c, d, a) + x[i + 12] + 0x6ED9EBA1, 15)
        a = (a + aa) & 0xFFFFFFFF
        b = (b + bb) & 0xFFFFFFFF
        c = (c + cc) & 0xFFFFFFFF
        d = (d + dd) & 0xFFFFFFFF
    return struct.pack("<4I", a, b, c, d)

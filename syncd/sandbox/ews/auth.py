"""HTTP authentication for the EWS sandbox: Basic (password checked) and NTLM (a real
NEGOTIATE/CHALLENGE/AUTHENTICATE exchange on one keep-alive connection, the NTLMv2 response
checked against the password). Every request authenticates by itself, so a request without
credentials always gets the 401 that offers the configured schemes.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import threading
from typing import Literal

from ..httpbase import Request, Response
from . import ntlm

__all__ = ["Authenticator"]


class Authenticator:
    """Checks requests against `users` (name -> password; None accepts any name and password)."""

    def __init__(self, mode: Literal["basic", "ntlm", "any"], users: dict[str, str] | None) -> None:
        self.mode = mode
        self.users = None if users is None else {k.lower(): v for k, v in users.items()}
        self._lock = threading.Lock()
        # Server challenges handed out, per client connection, awaiting the AUTHENTICATE message.
        self._challenges: dict[tuple[str, int], bytes] = {}

    def offer(self) -> str:
        """The WWW-Authenticate value for an unauthenticated request."""
        basic = 'Basic realm="127.0.0.1"'
        return {"basic": basic, "ntlm": "NTLM", "any": f"NTLM, {basic}"}[self.mode]

    def unauthorized(self, challenge: str | None = None) -> Response:
        """A 401 offering the configured schemes (or carrying an NTLM challenge)."""
        return Response(
            401, b"401 - Unauthorized: Access is denied due to invalid credentials.", "text/plain; charset=utf-8",
            headers={"WWW-Authenticate": challenge or self.offer()},
        )

    def _known(self, names: list[str]) -> str | None:
        if self.users is None:
            return names[0] if names and names[0] else None
        return next((n for n in names if n.lower() in self.users), None)

    def check(self, request: Request) -> Response | None:
        """None when the request carries acceptable credentials, else the 401 to send."""
        scheme, _, token = (request.header("Authorization") or "").strip().partition(" ")
        scheme = scheme.lower()
        try:
            raw = base64.b64decode(token.strip().encode(), validate=True)
        except (binascii.Error, ValueError):
            return self.unauthorized()
        if scheme == "basic" and self.mode in ("basic", "any"):
            user, sep, password = raw.decode("utf-8", "replace").partition(":")
            known = self._known([user])
            if sep and known and (self.users is None or hmac.compare_digest(
                    self.users[known.lower()].encode(), password.encode())):
                return None
            return self.unauthorized()
        if scheme == "ntlm" and self.mode in ("ntlm", "any"):
            kind = ntlm.message_type(raw)
            if kind == 1:
                message, challenge = ntlm.challenge_message(raw)
                with self._lock:
                    self._challenges[request.client] = challenge
                return self.unauthorized("NTLM " + base64.b64encode(message).decode())
            if kind == 3:
                with self._lock:
                    issued = self._challenges.pop(request.client, None)
                if issued is not None and self._ntlm_ok(raw, issued):
                    return None
        return self.unauthorized()

    def _ntlm_ok(self, token: bytes, challenge: bytes) -> bool:
        try:
            auth = ntlm.parse_authenticate(token)
        except ValueError:
            return False
        names = [f"{auth.domain}\\{auth.user}", auth.user] if auth.domain else [auth.user]
        known = self._known(names)
        if known is None:
            return False
        if self.users is None:
            return True
        return ntlm.verify_ntlmv2(auth, self.users[known.lower()], challenge)

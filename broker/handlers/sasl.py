"""SaslHandshake (key 17) v0-1 and SaslAuthenticate (key 36) v0-2.

On a SASL listener these drive the connection's ``SaslAuthenticator`` (``broker/security/authenticator.py``):

- SaslHandshake names the mechanism; one the listener does not enable gets UNSUPPORTED_SASL_MECHANISM
  with the enabled list, and the connection closes after the answer. After v0 the tokens come unframed.
- SaslAuthenticate carries one token; a refused one gets SASL_AUTHENTICATION_FAILED with the mechanism's
  message after ``connection.failed.authentication.delay.ms``, then the connection closes. v1+ answers
  ``session_lifetime_ms`` (KIP-368): 0 for no limit.
- Both come again, on the same connection, to re-authenticate.

On other listeners, and for a SaslAuthenticate that starts no exchange, the answer is ILLEGAL_SASL_STATE
and the connection stays, as in Kafka.
"""

from __future__ import annotations

from typing import Any

from broker.handlers import RequestContext, ThenClose
from protocol import messages
from protocol.errors import ErrorCode


def handle_sasl_handshake(header: Any, body: Any, ctx: RequestContext) -> Any:
    sasl = ctx.connection.sasl
    response = messages.SaslHandshakeResponse
    if sasl is None:
        return response(error_code=int(ErrorCode.ILLEGAL_SASL_STATE), mechanisms=[])
    refused = sasl.handshake(body.mechanism, ctx.api_version)
    if refused is not None:
        ctx.log_rejected("sasl.handshake_refused", mechanism=body.mechanism, reason=refused,
                         enabled=sasl.enabled_mechanisms)
        return ThenClose(response(error_code=int(ErrorCode.UNSUPPORTED_SASL_MECHANISM),
                                  mechanisms=sasl.enabled_mechanisms), refused)
    return response(error_code=0, mechanisms=sasl.enabled_mechanisms)


def handle_sasl_authenticate(header: Any, body: Any, ctx: RequestContext) -> Any:
    sasl = ctx.connection.sasl
    if sasl is None or not sasl.exchange_open:
        message = ("SaslAuthenticate on a listener without SASL" if sasl is None
                   else "SaslAuthenticate received without a SaslHandshake starting an exchange")
        return _response(ErrorCode.ILLEGAL_SASL_STATE, message, b"", 0)
    return _authenticate(sasl, bytes(body.auth_bytes))


async def _authenticate(sasl: Any, token: bytes) -> Any:
    reply, failure, lifetime = await sasl.authenticate(token)
    if failure is not None:
        return ThenClose(_response(ErrorCode.SASL_AUTHENTICATION_FAILED, failure, b"", 0),
                         "SASL authentication failed")
    return _response(ErrorCode.NONE, None, reply, lifetime)


def _response(code: ErrorCode, message: str | None, token: bytes, lifetime_ms: int) -> Any:
    return messages.SaslAuthenticateResponse(error_code=int(code), error_message=message, auth_bytes=token,
                                             session_lifetime_ms=lifetime_ms)

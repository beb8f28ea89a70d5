"""The optional API key: `Authorization: Bearer KEY` or `X-API-Key: KEY`, compared in constant time.

Routers that need it are included with `dependencies=[ApiKeyGuard]` (see main.py); without LEARNSERVE_API_KEY
the guard lets everything through. Health, metrics, docs and the demo page are never guarded: probes and
Prometheus scrapers must reach them without a secret, and none of them runs the model or reveals it.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.deps import ServiceDep
from app.errors import Unauthorized

_bearer = HTTPBearer(
    auto_error=False, description="`Authorization: Bearer KEY` (when LEARNSERVE_API_KEY is set)"
)
_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="`X-API-Key: KEY` (when LEARNSERVE_API_KEY is set)"
)


def same_secret(given: str, expected: str) -> bool:
    """Constant time, and hashing first hides the expected key's length too."""
    return hmac.compare_digest(
        hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest()
    )


def require_api_key(
    service: ServiceDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header: Annotated[str | None, Depends(_header)],
) -> None:
    expected = service.settings.api_key
    if expected is None:
        return
    given = bearer.credentials if bearer else header
    if not given:
        raise Unauthorized(
            "This endpoint needs an API key: send `Authorization: Bearer KEY` or `X-API-Key: KEY`."
        )
    if not same_secret(given, expected.get_secret_value()):
        raise Unauthorized("The API key is not valid.")


ApiKeyGuard = Depends(require_api_key)

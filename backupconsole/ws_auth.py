"""Token authentication for websocket clients that are not browsers.

Browsers authenticate with the session cookie (Channels' AuthMiddlewareStack). API clients send
``Authorization: Token <key>``, as they do for the REST API; the token never goes in the URL,
where proxies would log it.
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware


@database_sync_to_async
def _user_for_token(key: str) -> Any:
    from rest_framework.authtoken.models import Token

    token = Token.objects.select_related("user").filter(key=key).first()
    if token is None or not token.user.is_active:
        return None
    return token.user


class TokenAuthMiddleware(BaseMiddleware):
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        headers = dict(scope.get("headers", []))
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        if authorization.startswith("Token "):
            user = await _user_for_token(authorization.removeprefix("Token ").strip())
            if user is not None:
                scope = {**scope, "user": user}
        return await super().__call__(scope, receive, send)

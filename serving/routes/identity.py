"""``GET /me`` (a Nexus-K extension): who the server takes the caller to be, for the chat page's header."""

from __future__ import annotations

from fastapi import APIRouter, Request

router = APIRouter()


@router.get("/me", include_in_schema=False)
async def me(request: Request) -> dict[str, str | None]:
    """The signed-in person (from a trusted single-sign-on proxy), the organisation, and how it was decided:
    ``sso``, ``key`` or ``open`` (a server without keys)."""
    state = request.scope.get("state", {})
    principal, caller = state.get("principal"), state.get("caller")
    via = "open" if principal is None else ("sso" if principal.key_prefix == "sso" else "key")
    user = getattr(caller, "proxy_user", None)
    return {"user": user, "organisation": getattr(principal, "org_name", None), "via": via}

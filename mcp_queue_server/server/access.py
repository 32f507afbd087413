"""Each principal sees and calls only its role's tools and resources (``MCP_QUEUE_AUTH_TOKENS_FILE``).

The server registers the tools of its own role (``MCP_QUEUE_ROLE``); a request by a principal
of the tokens file gets the part of those its principal's role has too. Two public hooks of
the SDK do it: a server middleware scopes ``tools/list``, ``resources/list``,
``resources/templates/list`` and refuses ``resources/read`` (the SDK's way to a per-caller
catalog), and an extension's ``tools/call`` interceptor (SEP-2133) refuses a call with a
one-line tool error naming the role, before the arguments are looked at.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mcp import MCPError
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension
from mcp.types import INVALID_PARAMS, CallToolRequestParams, CallToolResult, TextContent

from mcp_queue_server.server.identity import ANONYMOUS, Principals, principal_of
from mcp_queue_server.settings import Role

#: Which list result holds which items, and the field that names each item.
_LISTS = {"tools/list": ("tools", "name"), "resources/list": ("resources", "uri")}
_TEMPLATES = ("resources/templates/list", "resourceTemplates", "uriTemplate")


class RoleGate(Extension):
    """The role rules of one server: its tools' and resources' roles and its principals."""

    identifier = "io.github.mcp-queue-server/roles"

    def __init__(
        self,
        principals: Principals,
        tool_roles: Mapping[str, frozenset[Role]],
        resource_roles: Mapping[str, frozenset[Role]],
    ) -> None:
        self.principals = principals
        self.tool_roles = dict(tool_roles)
        self.resource_roles = dict(resource_roles)

    def _caller(self, ctx: ServerRequestContext[Any, Any]) -> tuple[str, Role]:
        principal = principal_of(ctx.request)
        return principal or ANONYMOUS, self.principals.role_of(principal)

    def tools_of(self, role: Role) -> list[str]:
        """The tools a request of ``role`` may see and call on this server."""
        server = self.principals.server_role
        return [name for name, roles in self.tool_roles.items() if server in roles and role in roles]

    def _may_read(self, uri: object, role: Role) -> bool:
        scheme = str(uri).partition("://")[0]
        return role in self.resource_roles.get(scheme, frozenset(Role))

    async def intercept_tool_call(
        self, params: CallToolRequestParams, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        principal, role = self._caller(ctx)
        allowed = self.tools_of(role)
        if params.name in self.tool_roles and params.name not in allowed:
            text = (
                f"{params.name} is not available to principal {principal} (role {role.value}); "
                f"its tools: {', '.join(allowed) or 'none'}"
            )
            return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)
        return await call_next(ctx)

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        """The server middleware: scope the lists to the caller's role, refuse a resource read or subscription."""
        if ctx.method in ("resources/read", "resources/subscribe"):  # a subscription reads too
            principal, role = self._caller(ctx)
            uri = (ctx.params or {}).get("uri")
            if not self._may_read(uri, role):
                raise MCPError(
                    INVALID_PARAMS, f"resource {str(uri)[:200]} is not available to principal {principal} (role {role})"
                )
        result = await call_next(ctx)
        if not isinstance(result, dict):
            return result
        if ctx.method in _LISTS:
            key, field = _LISTS[ctx.method]
        elif ctx.method == _TEMPLATES[0]:
            _, key, field = _TEMPLATES
        else:
            return result
        _, role = self._caller(ctx)
        if ctx.method == "tools/list":
            allowed = set(self.tools_of(role))
            keep = [item for item in result.get(key, []) if item.get(field) in allowed]
        else:
            keep = [item for item in result.get(key, []) if self._may_read(item.get(field), role)]
        return {**result, key: keep}

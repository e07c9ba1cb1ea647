"""OpenAPI post-processing, so the schema does not depend on the database backend."""

from __future__ import annotations

from typing import Any

# Django derives integer bounds from the database backend (SQLite's differ from PostgreSQL's);
# they are storage limits, not API contract, and would make the schema differ between modes.
_BACKEND_LIMITS = {
    32767,
    2147483647,
    9223372036854775807,
    -32768,
    -2147483648,
    -9223372036854775808,
}


def _strip(node: Any) -> None:
    if isinstance(node, dict):
        for bound in ("maximum", "minimum"):
            if node.get(bound) in _BACKEND_LIMITS:
                del node[bound]
        if node.get("type") == "integer" and node.get("format") == "int64":
            del node["format"]
        for value in node.values():
            _strip(value)
    elif isinstance(node, list):
        for value in node:
            _strip(value)


def drop_backend_integer_limits(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    _strip(result)
    return result

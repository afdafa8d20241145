"""Calling PD's HTTP API in tests: one request, its status checked, its JSON back."""

from __future__ import annotations

from typing import Any

import aiohttp

# PD's default rule in PD's JSON, as the default replication config makes it.
DEFAULT_RULE = {
    "group_id": "pd",
    "id": "default",
    "start_key": "",
    "end_key": "",
    "role": "voter",
    "is_witness": False,
    "count": 3,
}


async def call(
    http: aiohttp.ClientSession, method: str, path: str, body: Any = None, status: int = 200
) -> Any:
    async with http.request(method, path, json=body) as resp:
        out = await resp.json(content_type=None)
        assert resp.status == status, out
        return out

"""Follow a set of objects live: list once, then watch from the list's resourceVersion,
and hand the caller the whole current set after every change.

Level-triggered on purpose: placement rules and config are small, and a consumer that
always sees the complete set cannot miss an event or apply one twice. A watch the
server ends is resumed from the last resourceVersion seen (BOOKMARKs keep it fresh);
410 Gone means that version was compacted away, so the set is listed again. An
unreachable API server is retried with capped backoff; the last set stays in force.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator

from pdcore.adapters.kube.client import ApiError, Gone, KubeClient, Obj

log = logging.getLogger("kubepd.kube.watch")


async def follow(
    client: KubeClient,
    path: str,
    *,
    label_selector: str = "",
    field_selector: str = "",
    watch_timeout_s: int = 300,
    backoff_s: float = 0.5,
    max_backoff_s: float = 10.0,
) -> AsyncGenerator[dict[str, Obj], None]:
    """Yield {name: object} for everything under `path` matching the selectors: first
    the listed set, then the new set after each change (never the same set twice)."""
    last: dict[str, Obj] | None = None
    delay = backoff_s
    while True:
        try:
            listing = await client.list_objects(
                path, label_selector=label_selector, field_selector=field_selector
            )
        except ApiError as e:
            log.warning("list %s failed, retrying in %.1fs: %s", path, delay, e)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_backoff_s)
            continue
        current = {o["metadata"]["name"]: o for o in listing.items}
        rv = listing.resource_version
        if current != last:
            last = dict(current)
            yield dict(current)
        while True:  # watch, and resume the watch, from `rv`
            try:
                stream = client.watch(
                    path,
                    rv,
                    label_selector=label_selector,
                    field_selector=field_selector,
                    timeout_s=watch_timeout_s,
                )
                async with contextlib.aclosing(stream):
                    async for ev in stream:
                        rv = ev.resource_version or rv
                        delay = backoff_s
                        if ev.type == "BOOKMARK":
                            continue
                        name = ev.object["metadata"]["name"]
                        if ev.type == "DELETED":
                            current.pop(name, None)
                        else:
                            current[name] = ev.object
                        if current != last:
                            last = dict(current)
                            yield dict(current)
            except Gone:
                log.info("watch %s: resourceVersion %s is gone; listing again", path, rv)
                break
            except ApiError as e:
                log.warning("watch %s interrupted, resuming in %.1fs: %s", path, delay, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, max_backoff_s)

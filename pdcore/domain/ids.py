"""The ID allocator: unique ids for stores, regions and peers, reserved in batches.

The high-water mark (`end`) is persisted *before* any id below it is handed out, so a
restart or a new leader resumes at the mark and never reuses an id.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_STEP = 1000
# PD sets no bound on either. AllocID is one counter bump and one CAS whatever the
# count, so its bound only stops one call reserving billions of ids; bulk loaders (the
# simulator, benchmarks) take up to a million at once. A split answer is built entry by
# entry on the event loop: TiDB splits at most 1,000 regions per statement.
MAX_ALLOC_COUNT = 1 << 20
MAX_SPLIT_COUNT = 10_000
MAX_SPLIT_IDS = 100_000  # split_count * (1 + peers)


@dataclass(slots=True)
class IdAllocator:
    base: int = 0  # last id handed out
    end: int = 0  # persisted mark: ids up to here are reserved
    step: int = DEFAULT_STEP

    def start(self, persisted_end: int) -> None:
        self.base = self.end = persisted_end

    def reservation_needed(self, count: int) -> int | None:
        """The new mark to persist before `count` ids can be given, or None."""
        if self.base + count <= self.end:
            return None
        return self.base + count + self.step

    def skip_to(self, mark: int) -> None:
        """Hand out only ids above `mark` from now on (an operator raised the mark)."""
        self.end = max(self.end, mark)
        self.base = max(self.base, mark)

    def set_end(self, end: int) -> None:
        self.end = max(self.end, end)

    def alloc(self, count: int = 1) -> int:
        """Hand out `count` consecutive ids and return the largest."""
        if count <= 0:
            count = 1
        if self.base + count > self.end:
            raise RuntimeError("id reservation must be persisted first")
        self.base += count
        return self.base

"""The refusal counts of the open round (or of updates refused before any round opened), kept
in a file so that an aggregator restarted mid-round still reports them in the round's partial.
The update log keeps what was accepted; this keeps what was refused."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from nacelle.files import write_atomically

log = logging.getLogger(__name__)

# A flood of bad messages must not cost a file write each: a crash loses at most this long.
SAVE_INTERVAL_S = 1.0


@dataclass(frozen=True)
class RoundRefusals:
    round_id: int | None  # None: refused before any round opened, counted in the next
    counts: Counter[str] = field(default_factory=Counter)


class RefusalCountsFile:
    def __init__(self, path: Path, interval_s: float = SAVE_INTERVAL_S) -> None:
        self.path = path
        self._interval_s = interval_s
        self._unsaved: RoundRefusals | None = None
        self._timer: asyncio.TimerHandle | None = None

    def load(self) -> RoundRefusals:
        """What the last run saved; nothing when there is no file or it cannot be read (logged:
        the counts are a report, not a reason not to start)."""
        try:
            data = json.loads(self.path.read_bytes())
            return RoundRefusals(data["round_id"], Counter({str(k): int(v) for k, v in data["counts"].items()}))
        except FileNotFoundError:
            return RoundRefusals(None)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("refusal counts in %s are unreadable (%s); starting from none", self.path, exc)
            return RoundRefusals(None)

    def save_soon(self, refusals: RoundRefusals) -> None:
        """Saved within the interval (needs a running event loop); a later call replaces it."""
        self._unsaved = RoundRefusals(refusals.round_id, Counter(refusals.counts))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._interval_s, self.flush)

    def save(self, refusals: RoundRefusals) -> None:
        self._unsaved = refusals
        self.flush()

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._unsaved is None:
            return
        refusals, self._unsaved = self._unsaved, None
        # Without fsync, like an edge node's state: a crash of the process loses nothing.
        body = {"round_id": refusals.round_id, "counts": dict(refusals.counts)}
        write_atomically(self.path, json.dumps(body).encode(), durable=False)

"""The price cache: ``$JOBMAN_HOME/prices.json``, one entry per price, each with its fetch time.

Why a file: an on-demand price changes a few times a year, and the Price List API answers from one
region (``us-east-1``) in about a second; a receipt per job and a ``--max-cost`` check at schedule
time (which must not call AWS at all) both read the same file. An entry older than ``max_age``
(default 7 days, ``[cost] price_max_age`` in config.toml or ``JOBMAN_PRICE_MAX_AGE`` in seconds) is
fetched again before use. Written atomically (a temporary file, fsync, rename), so a crash or two
processes writing at once leave one whole file, never a torn one; the last writer wins, which at
worst costs one extra fetch. A missing or unreadable file is an empty cache.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from ..model import format_time, parse_time
from .quote import Quote

CACHE_FILE_NAME = "prices.json"
#: A fetch time further ahead of the caller's clock than this is garbage (it would never go stale).
FUTURE_SLACK = timedelta(hours=1)
DEFAULT_MAX_AGE = 7 * 86400
FORMAT = 1


def default_max_age() -> int:
    """Seconds: ``JOBMAN_PRICE_MAX_AGE``, else ``[cost] price_max_age``, else 7 days."""
    from ..config import config_section

    raw: Any = os.environ.get("JOBMAN_PRICE_MAX_AGE") or config_section("cost").get("price_max_age")
    try:
        value = int(raw) if raw is not None else DEFAULT_MAX_AGE
    except (TypeError, ValueError):
        return DEFAULT_MAX_AGE
    return value if value > 0 else DEFAULT_MAX_AGE


class PriceCache:
    """Read and write quotes by key. Thread-safe within a process; atomic across processes."""

    def __init__(self, path: Path, max_age: int = DEFAULT_MAX_AGE) -> None:
        self.path = Path(path)
        self.max_age = max_age
        self._lock = threading.Lock()

    @classmethod
    def default(cls) -> "PriceCache":
        from ..config import jobman_home

        return cls(jobman_home() / CACHE_FILE_NAME, default_max_age())

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        prices = data.get("prices") if isinstance(data, dict) and data.get("format") == FORMAT else None
        return prices if isinstance(prices, dict) else {}

    def get(self, key: str, now: datetime | None = None) -> Quote | None:
        """The cached quote, or None when absent, unreadable, or (with ``now``) older than max_age.

        A malformed entry (a price that is not a finite non-negative number, a missing or
        unparseable fetch time, or one more than an hour ahead of ``now`` or the clock) is treated
        as absent: the caller fetches it again (or, at schedule time, leaves the check to the
        launch). jobman writes the file, but a hand edit or another tool must never yield a
        made-up price or a traceback (``jobman schedule --max-cost`` reads this)."""
        with self._lock:
            entry = self._read().get(key)
        quote = _quote(entry)
        if quote is None:
            return None
        if now is not None and now - quote.fetched_at > timedelta(seconds=self.max_age):
            return None
        if quote.fetched_at - (now or datetime.now(timezone.utc)) > FUTURE_SLACK:
            return None  # fetched "in the future": garbage, or it would never go stale
        return quote

    def put(self, key: str, quote: Quote) -> None:
        with self._lock:
            prices = self._read()
            prices[key] = {"usd": quote.usd, "unit": quote.unit, "source": quote.source,
                           "fetched-at": format_time(quote.fetched_at)}
            self._write({"format": FORMAT, "prices": prices})

    def _write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=".prices-", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(data, out, indent=1, sort_keys=True)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise


def _quote(entry: Any) -> Quote | None:
    """An entry as a :class:`Quote`, or None when any field is missing or not what jobman writes."""
    if not isinstance(entry, dict):
        return None
    usd, unit, source, fetched = (entry.get(k) for k in ("usd", "unit", "source", "fetched-at"))
    if isinstance(usd, bool) or not isinstance(usd, (int, float)) or not math.isfinite(usd) or usd < 0:
        return None
    if not isinstance(unit, str) or not isinstance(source, str) or not isinstance(fetched, str):
        return None
    try:
        fetched_at = parse_time(fetched)
    except (TypeError, ValueError, OverflowError):
        return None
    if fetched_at is None:
        return None
    return Quote(usd=float(usd), unit=unit, source=source, fetched_at=fetched_at.astimezone(timezone.utc))

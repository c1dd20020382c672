"""A price with where it came from, and the one error a price lookup raises.

Prices are plain floats of USD: the Price List publishes them as decimal strings with ten
places (``"0.1008000000"``), and a float carries 15 significant digits, so no receipt of any
realistic size loses a cent to binary rounding. Receipts store the exact float; only display
rounds (see :mod:`.receipt`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Quote:
    """``usd`` per ``unit`` ("hour" or "GB-month"), from ``source`` ("Price List", "spot price
    history"), fetched at ``fetched_at`` (UTC). ``note``: anything the basis must add (e.g. the
    number of spot price changes averaged)."""

    usd: float
    unit: str
    source: str
    fetched_at: datetime
    note: str = ""


class PriceUnavailable(Exception):
    """No price could be found. ``transient``: a later try may succeed (throttling, a network
    error, a 5xx); otherwise the answer is final (no such product, access denied) and the receipt
    says ``unknown: <why>`` at once."""

    def __init__(self, why: str, *, transient: bool = False) -> None:
        super().__init__(why)
        self.why = " ".join(why.split())
        self.transient = transient

    def __str__(self) -> str:
        return self.why


#: AWS error codes worth another try later.
TRANSIENT_CODES = frozenset({
    "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
    "ServiceUnavailable", "ServiceUnavailableException", "InternalError", "InternalFailure",
    "InternalErrorException", "RequestTimeout", "RequestTimeoutException", "Unavailable",
})


def from_aws_error(exc: Exception, what: str) -> PriceUnavailable:
    """A botocore exception as :class:`PriceUnavailable`, transient when retrying may help."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error") or {}
        code = str(error.get("Code") or "")
        status = int((exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
        message = " ".join(str(error.get("Message") or "").split())
        if message.startswith("<"):  # an HTML error page (a proxy, an emulator): not worth repeating
            message = "an HTML error page instead of an AWS answer"
        message = message[:200]
        return PriceUnavailable(f"{what}: {code}: {message}".rstrip(": "),
                                transient=code in TRANSIENT_CODES or status >= 500)
    if isinstance(exc, (NoCredentialsError, NoRegionError)):
        return PriceUnavailable(f"{what}: {exc}", transient=False)
    if isinstance(exc, BotoCoreError):  # connection errors, timeouts
        return PriceUnavailable(f"{what}: {type(exc).__name__}: {exc}", transient=True)
    return PriceUnavailable(f"{what}: {type(exc).__name__}: {exc}", transient=False)

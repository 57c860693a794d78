"""Deterministic stand-ins for the billing ledger and the account service of case 8842.

No network and no API keys: every tool reads fixed fixture data, so a run is reproducible and
a test can count calls. Each call bumps `TOOL_CALLS` (this process only); the graph also records
its calls in the `tool_calls` state channel, which is checkpointed and so survives a crash.
"""

from __future__ import annotations

from collections import Counter
from typing import TypedDict

CUSTOMER_ID = "cus_8842"
CUSTOMER_EMAIL = "dana.reyes@example.com"

TOOL_CALLS: Counter[str] = Counter()
"""Calls per tool name in this process; `reset_tool_calls()` clears it."""


class Charge(TypedDict):
    charge_id: str
    customer_id: str
    amount: float
    currency: str
    description: str
    created: str


class Refund(TypedDict):
    refund_id: str
    charge_id: str
    amount: float
    currency: str
    status: str


class LoginStatus(TypedDict):
    customer_id: str
    email: str
    status: str
    reason: str
    failed_attempts: int


class PasswordReset(TypedDict):
    email: str
    reset_id: str
    status: str


# The ledger: the subscription renewal went through twice, 40 seconds apart.
_LEDGER: tuple[Charge, ...] = (
    {
        "charge_id": "ch_8842_001",
        "customer_id": CUSTOMER_ID,
        "amount": 129.99,
        "currency": "USD",
        "description": "Pro plan, annual renewal",
        "created": "2024-11-02T14:03:11Z",
    },
    {
        "charge_id": "ch_8842_002",
        "customer_id": CUSTOMER_ID,
        "amount": 129.99,
        "currency": "USD",
        "description": "Pro plan, annual renewal",
        "created": "2024-11-02T14:03:51Z",
    },
    {
        "charge_id": "ch_8842_003",
        "customer_id": CUSTOMER_ID,
        "amount": 9.99,
        "currency": "USD",
        "description": "Extra storage, monthly",
        "created": "2024-11-05T08:00:00Z",
    },
)

_ACCOUNTS: dict[str, LoginStatus] = {
    CUSTOMER_ID: {
        "customer_id": CUSTOMER_ID,
        "email": CUSTOMER_EMAIL,
        "status": "locked",
        "reason": "too many failed sign-in attempts",
        "failed_attempts": 6,
    }
}


def reset_tool_calls() -> None:
    """Forget the per-process call counts (tests call this before each run)."""
    TOOL_CALLS.clear()


def find_duplicate_charges(customer_id: str) -> list[Charge]:
    """Later charges that repeat an earlier one (same amount and description, same day)."""
    TOOL_CALLS["find_duplicate_charges"] += 1
    seen: set[tuple[float, str, str]] = set()
    duplicates: list[Charge] = []
    for charge in _LEDGER:
        if charge["customer_id"] != customer_id:
            continue
        key = (charge["amount"], charge["description"], charge["created"][:10])
        if key in seen:
            duplicates.append(dict(charge))  # type: ignore[arg-type]
        seen.add(key)
    return duplicates


def issue_refund(charge_id: str, amount: float) -> Refund:
    """Refund a charge; the refund id derives from the charge id, as an idempotency key would."""
    TOOL_CALLS["issue_refund"] += 1
    charge = next((c for c in _LEDGER if c["charge_id"] == charge_id), None)
    if charge is None:
        raise ValueError(f"unknown charge {charge_id!r}")
    if amount > charge["amount"]:
        raise ValueError(f"refund {amount:.2f} exceeds charge {charge['amount']:.2f}")
    return {
        "refund_id": f"re_{charge_id.removeprefix('ch_')}",
        "charge_id": charge_id,
        "amount": amount,
        "currency": charge["currency"],
        "status": "succeeded",
    }


def check_login_status(customer_id: str) -> LoginStatus:
    """Why the customer cannot sign in."""
    TOOL_CALLS["check_login_status"] += 1
    account = _ACCOUNTS.get(customer_id)
    if account is None:
        raise ValueError(f"unknown customer {customer_id!r}")
    return dict(account)  # type: ignore[return-value]


def send_password_reset(email: str) -> PasswordReset:
    """Send a reset link (which also unlocks a locked account once used)."""
    TOOL_CALLS["send_password_reset"] += 1
    user = email.split("@", 1)[0]
    return {"email": email, "reset_id": f"pwr_{user.replace('.', '_')}", "status": "sent"}

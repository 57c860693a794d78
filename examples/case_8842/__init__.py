"""The bundled customer-support example: case 8842, a duplicate charge and a locked account."""

from .graph import (
    CRASH_POINTS,
    DEFAULT_REFUND_THRESHOLD,
    THREAD_ID,
    USER_MESSAGE,
    SupportState,
    approval,
    build_graph,
    compose_reply,
    initial_input,
    merge_counts,
    thread_config,
)

__all__ = [
    "CRASH_POINTS",
    "DEFAULT_REFUND_THRESHOLD",
    "THREAD_ID",
    "USER_MESSAGE",
    "SupportState",
    "approval",
    "build_graph",
    "compose_reply",
    "initial_input",
    "merge_counts",
    "thread_config",
]

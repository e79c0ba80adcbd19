"""One-line error messages: every user-facing error of adanat is one line on stderr."""

from __future__ import annotations


class NonFiniteError(RuntimeError):
    """A loss, reward, gradient, parameter or state became NaN or infinite (training stops with
    the last good checkpoint kept)."""


def first_line(error: BaseException, limit: int = 300) -> str:
    """``error`` as one line: its message's first line (library messages such as torch's
    ``load_state_dict`` errors span many), at most ``limit`` characters; its type when empty."""
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:limit]

"""Exceptions for user mistakes.

A :class:`UserError` is raised whenever the *user* got something wrong (unknown
name, out-of-range value, missing file).  The command-line entry points catch it
and print its message without a traceback; its message always says what is
wrong and how to fix it.
"""


class UserError(ValueError):
    """A mistake in the user's input: the message says what is wrong and how to fix it."""


class NotApplicable(Exception):
    """A method cannot be applied to a model architecture (the message says why).

    The harness records the pair as skipped, with this reason, instead of failing.
    """


def check_range(name: str, value, lo, hi, *, integer: bool = False):
    """Refuse ``value`` outside ``[lo, hi]`` with a message naming the allowed range."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a number in [{lo}, {hi}], got {value!r}") from None
    if integer and v != int(v):
        raise UserError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
    if not (lo <= v <= hi):
        raise UserError(f"{name}={value!r} is out of range: allowed range is [{lo}, {hi}]")
    return int(v) if integer else v

"""Three-valued verdicts of a bound check: ``held``, ``failed`` or ``not checked (why)``.

A check ``measured <= bound`` says something only where the bound's hypotheses hold and both
sides are finite numbers: a comparison with a NaN measurement (an overflowed emulated run) is
not a verdict, and neither is one where a hypothesis failed.  ``verdict`` takes arrays of
measured errors and bounds (any matching shapes: samples, layers, tokens) and the hypotheses as
named boolean arrays, and counts each entry once:

* not checked, for the first of these reasons that applies: ``overflow`` (the caller's
  ``overflow`` mask: the emulated run left the format's range, which Model 4.1 excludes),
  ``hypotheses failed`` (naming the failing hypotheses), ``non-finite measurement`` (NaN or
  inf, for example the paper's x/0 = inf at a zero exact component), ``bound not finite``;
* otherwise held (measured <= bound) or failed.

The whole check is ``failed`` when any checked entry failed, ``held`` when at least one entry
was checked and none failed, ``not checked`` when none was checked, with the reasons.  This is
plain NumPy on concrete values (reporting, not traced code).
"""

from __future__ import annotations

import numpy as np

HELD, FAILED, NOT_CHECKED = "held", "failed", "not checked"
OVERFLOW, NON_FINITE, HYPOTHESES, BOUND_NOT_FINITE = (
    "overflow", "non-finite measurement", "hypotheses failed", "bound not finite")


def verdict(measured, bound, hypotheses: dict | None = None, overflow=None, overflow_reason: str = OVERFLOW) -> dict:
    """The verdict of ``measured <= bound`` entry by entry (see the module docstring).

    Returns ``{"verdict": "held" | "failed" | "not checked", "label": str, "entries": int,
    "checked": int, "held": int, "failed": int, "not_checked": {reason: count}}``; ``label`` is
    the one-line form: ``held``, ``failed (2 of 16 checked)``, ``not checked (overflow)``, or
    ``held (12 of 16 checked; not checked: overflow on 4)``.  ``overflow_reason`` names what the
    ``overflow`` mask marks, when the caller knows it more precisely (or less).
    """
    measured = np.asarray(measured, dtype=float)
    bound = np.broadcast_to(np.asarray(bound, dtype=float), measured.shape)
    overflowed = np.zeros(measured.shape, dtype=bool) if overflow is None else \
        np.broadcast_to(np.asarray(overflow, dtype=bool), measured.shape)
    flags = {name: np.broadcast_to(np.asarray(value, dtype=bool), measured.shape)
             for name, value in (hypotheses or {}).items()}
    hypotheses_hold = np.ones(measured.shape, dtype=bool)
    for value in flags.values():
        hypotheses_hold = hypotheses_hold & value
    broken = ~overflowed & ~hypotheses_hold
    left = ~overflowed & hypotheses_hold
    non_finite = left & ~np.isfinite(measured)
    unbounded = left & np.isfinite(measured) & ~np.isfinite(bound)
    checked = left & np.isfinite(measured) & np.isfinite(bound)
    with np.errstate(invalid="ignore"):
        held = checked & (measured <= bound)
    failed = checked & ~held
    reasons = {}
    for reason, mask in ((overflow_reason, overflowed), (HYPOTHESES, broken), (NON_FINITE, non_finite),
                         (BOUND_NOT_FINITE, unbounded)):
        if mask.any():
            if reason == HYPOTHESES:
                failing = [name for name, value in flags.items() if np.any(broken & ~value)]
                reason = f"{HYPOTHESES} ({', '.join(failing)})"
            reasons[reason] = int(mask.sum())
    entries, n_checked, n_failed = int(measured.size), int(checked.sum()), int(failed.sum())
    if n_failed:
        result = FAILED
    elif n_checked:
        result = HELD
    else:
        result = NOT_CHECKED
    return {"verdict": result, "label": _label(result, entries, n_checked, n_failed, reasons), "entries": entries,
            "checked": n_checked, "held": int(held.sum()), "failed": n_failed, "not_checked": reasons}


def _label(result, entries, checked, failed, reasons) -> str:
    if result == NOT_CHECKED:
        return f"{NOT_CHECKED} ({'; '.join(reasons) if reasons else 'nothing to check'})"
    parts = []
    if result == FAILED:
        parts.append(f"{failed} of {checked} checked")
    elif checked < entries:
        parts.append(f"{checked} of {entries} checked")
    if reasons:
        parts.append("not checked: " + ", ".join(f"{reason} on {count}" for reason, count in reasons.items()))
    return result + (f" ({'; '.join(parts)})" if parts else "")


def holds(result: dict):
    """``True`` (held), ``False`` (failed) or ``None`` (not checked): the JSON ``holds`` field."""
    return {HELD: True, FAILED: False}.get(result["verdict"])


def combine(results) -> dict:
    """One verdict over several checks (failed if any failed; held if any held; else not checked)."""
    results = list(results)
    reasons = {}
    for result in results:
        for reason, count in result["not_checked"].items():
            reasons[reason] = reasons.get(reason, 0) + count
    entries = sum(r["entries"] for r in results)
    checked = sum(r["checked"] for r in results)
    failed = sum(r["failed"] for r in results)
    result = FAILED if failed else HELD if checked else NOT_CHECKED
    return {"verdict": result, "label": _label(result, entries, checked, failed, reasons), "entries": entries,
            "checked": checked, "held": sum(r["held"] for r in results), "failed": failed, "not_checked": reasons}

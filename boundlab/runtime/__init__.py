"""What every rung asks of JAX itself: float64 checks (``x64``), one compiled program per entry
point (``compilation``), random draws that compile once per size class (``draws``)."""

"""matplotlib's pyplot on the Agg backend (PNG files, no display), imported only when a figure is
drawn so that ``import boundlab`` does not load matplotlib."""

from __future__ import annotations


def pyplot():
    """``matplotlib.pyplot`` with the Agg backend selected."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt

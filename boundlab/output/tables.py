"""CSV files: rows under a header (``write_table``) or dict rows, one column per key
(``write_rows``)."""

from __future__ import annotations

import csv


def write_table(path, header, rows) -> None:
    """``rows`` (sequences) under ``header`` as CSV."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def write_rows(path, rows, columns=None) -> None:
    """Dict rows as CSV, one column per key that any row has (first appearance order, or the
    order of ``columns``, which must name every key); an empty file for no rows."""
    with open(path, "w", newline="") as handle:
        if rows:
            columns = list(dict.fromkeys(key for row in rows for key in row)) if columns is None else list(columns)
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)

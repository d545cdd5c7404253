"""The files a run writes, below every analysis and study: strict JSON (``strict_json``),
CSV tables (``tables``), matplotlib on the Agg backend (``pyplot``), progress bars
(``progress``), and run folders that cannot be mistaken for a finished run (``run_folder``)."""

"""Results: tidy rows (`metrics.csv`, `run.json`), statistics, rendering, and comparing result sets."""

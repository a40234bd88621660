"""The HTML report: one self-contained page built from results/bench/*.csv, figures and run.json."""

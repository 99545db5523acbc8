"""Verdicts: criteria, the statistics behind them, comparison with earlier releases, outcomes."""

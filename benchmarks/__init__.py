"""MEDIC-AD benchmarks (GitHub issue 7): run with ``python benchmarks/run.py [--quick]``; see README.md."""

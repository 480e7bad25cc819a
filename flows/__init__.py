"""Prefect flows: orchestration only; the maths lives in ``spoton``, the I/O in ``tasks``."""

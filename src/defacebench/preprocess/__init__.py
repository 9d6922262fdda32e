"""Preprocessing: brain extraction, registration, grids, the per-subject pipeline."""

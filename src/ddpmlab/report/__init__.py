"""Comparing trained models: suites (compare.py), training stability (stability.py), figures (plots.py) and the
report files (render.py)."""

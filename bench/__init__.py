"""The benchmark harness of issue 12 ("Hospital scale"): ``python -m bench`` (see README, "Performance")."""

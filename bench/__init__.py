"""pingr's benchmark suite: every figure against a reference measured in the same run."""

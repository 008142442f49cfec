"""kmmlu task YAMLs."""

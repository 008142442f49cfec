"""korquad task YAMLs."""

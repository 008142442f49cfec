"""nsmc task YAMLs."""

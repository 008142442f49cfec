"""speech task YAMLs."""

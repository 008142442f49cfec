"""kosbi task YAMLs."""

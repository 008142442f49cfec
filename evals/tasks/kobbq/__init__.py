"""kobbq task YAMLs."""

"""kornli task YAMLs."""

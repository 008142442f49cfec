"""kobest task YAMLs."""

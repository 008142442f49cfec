"""Task definitions (YAML, one per task) and the small utils module they name."""

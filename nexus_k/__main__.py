"""``python -m nexus_k``: the same as the ``nexus-k`` command."""

from nexus_k.cli import main

# Guarded: vLLM starts worker processes with "spawn", which re-imports the main module.
if __name__ == "__main__":
    main()

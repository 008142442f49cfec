"""Nexus-K: an open Korean-language sovereign LLM stack."""

__version__ = "0.1.0"

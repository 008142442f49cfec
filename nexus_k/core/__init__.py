"""The ground floor: settings, errors, paths, Korean PII redaction, chat templates and bundled text.

Nothing here imports an area package (serving, training, tokenizer, evals, quantum_kernels) or the CLI.
"""

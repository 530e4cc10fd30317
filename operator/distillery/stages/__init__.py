"""The four stages: teacher launch, generate, train, evaluate.

Each is a library function plus a CLI entry point (`add_arguments`, `main`).
Modules here import heavy libraries (torch, transformers, vLLM) inside functions.
"""

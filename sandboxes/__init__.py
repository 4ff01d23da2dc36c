"""Sandboxes for running untrusted model-written code (the code domain builds on them)."""

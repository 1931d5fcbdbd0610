"""Rego files shipped with the KBS (the built-in resource policy)."""

"""Code understanding: languages and grammars, parsing, symbols, token estimates, syntax checks.

The only package that imports tree_sitter; `index/` and `swarm/` both build on it.
"""

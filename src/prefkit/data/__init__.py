"""Data layer: read -> normalise -> validate -> tokenise. See ../../shared/DESIGN.md."""

"""VGG16 extractors (being written)."""

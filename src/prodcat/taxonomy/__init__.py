"""The taxonomy: the category tree (`tree`) and probabilities over it (`probabilities`).

A category is a path of names, written "Footwear > Shoes > Sports Shoes" (`format_path`), read back
with `parse_path`; a leaf's probability adds up to every ancestor, and a prediction can back off to
the deepest confident ancestor.
"""

from prodcat.taxonomy.tree import SEPARATOR, CategoryPath, Taxonomy, format_path, parse_path

__all__ = ["SEPARATOR", "CategoryPath", "Taxonomy", "format_path", "parse_path"]

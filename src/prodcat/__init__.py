"""prodcat: put e-commerce products into the categories of a hierarchical taxonomy."""

__version__ = "0.1.0"

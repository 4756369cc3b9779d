"""The catalogue stage: reading product tables and folder trees, checking every row, the split.

    >>> from prodcat.catalogue import ColumnMapping, load_catalogue
    >>> cat = load_catalogue("products.csv", ColumnMapping(label_column="category"))
    >>> cat.products[0].label, len(cat.rejected)

`products` holds the types (`Product`, `Catalogue`, `Problem`, `ColumnMapping`), `reading` turns
tables and folder trees into records and checks each row, `columns` checks a table's header, `load`
checks the photos and is the one entry point, `summary` is what `prodcat check` prints, `split` the
grouped train / validation / test split, `classes` which classes a training learns (the class-size
floor), `images` the safe photo decoding everything else uses, `extra_labels` people's answers
folded in before training.
"""

from prodcat.catalogue.load import load_catalogue
from prodcat.catalogue.products import (
    IMAGE_SUFFIXES,
    PROBLEM_KINDS,
    TABLE_SUFFIXES,
    Catalogue,
    CatalogueError,
    ColumnMapping,
    Problem,
    Product,
)
from prodcat.catalogue.summary import format_summary, summarise

__all__ = [
    "IMAGE_SUFFIXES",
    "PROBLEM_KINDS",
    "TABLE_SUFFIXES",
    "Catalogue",
    "CatalogueError",
    "ColumnMapping",
    "Problem",
    "Product",
    "format_summary",
    "load_catalogue",
    "summarise",
]

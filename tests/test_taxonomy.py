"""Taxonomy: full paths as classes, navigation, search and the JSON round trip."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from prodcat.taxonomy.tree import SEPARATOR, Taxonomy, format_path, parse_path


@pytest.fixture(scope="module")
def sample_paths(sample_csv: Path) -> list[tuple[str, ...]]:
    with sample_csv.open(newline="", encoding="utf-8") as f:
        return [tuple(row["category"].split(" > ")) for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def taxonomy(sample_paths: list[tuple[str, ...]]) -> Taxonomy:
    return Taxonomy.from_paths(sample_paths)


def test_parse_and_format_are_inverse() -> None:
    assert parse_path("Footwear > Shoes >Sports Shoes ") == ("Footwear", "Shoes", "Sports Shoes")
    assert parse_path("A/B", separator="/") == ("A", "B")
    assert format_path(("Footwear", "Shoes")) == "Footwear > Shoes"
    assert SEPARATOR == " > "


@pytest.mark.parametrize("text", ["", "   ", "A >> B", "A > ", "> A"])
def test_parse_path_rejects_empty_levels(text: str) -> None:
    with pytest.raises(ValueError, match="category path") as info:
        parse_path(text)
    assert repr(text) in str(info.value)


def test_sample_nodes_labels_and_leaves(
    taxonomy: Taxonomy, sample_paths: list[tuple[str, ...]]
) -> None:
    distinct = sorted(set(sample_paths))
    assert taxonomy.labels == distinct
    assert taxonomy.leaves == distinct  # no sample label is the parent of another
    assert taxonomy.depth() == 3
    prefixes = {p[:k] for p in distinct for k in (1, 2, 3)}
    assert taxonomy.paths == sorted(prefixes)
    assert len(taxonomy) == len(prefixes)
    assert ("Footwear", "Shoes") in taxonomy
    assert "Footwear > Shoes > Heels" in taxonomy
    assert ("Footwear", "Heels") not in taxonomy
    assert "A >> B" not in taxonomy


def test_navigation(taxonomy: Taxonomy) -> None:
    sandals = ("Footwear", "Sandal", "Sandals")
    assert taxonomy.ancestors(sandals) == [("Footwear",), ("Footwear", "Sandal")]
    assert taxonomy.ancestors(("Footwear",)) == []
    assert taxonomy.children(("Footwear", "Sandal")) == [
        ("Footwear", "Sandal", "Flip Flops"),
        sandals,
    ]
    assert taxonomy.children(sandals) == []
    top = [p[0] for p in taxonomy.children(())]
    assert top == ["Accessories", "Apparel", "Footwear", "Free Items", "Personal Care"]
    under = taxonomy.descendants("Footwear > Sandal")
    assert under == [("Footwear", "Sandal", "Flip Flops"), sandals]
    assert set(taxonomy.descendants(())) == set(taxonomy.paths)
    with pytest.raises(KeyError, match="Footwear > Boots"):
        taxonomy.children(("Footwear", "Boots"))


def test_leaf_under_two_parents_is_two_classes(taxonomy: Taxonomy) -> None:
    shoes_sandals = ("Footwear", "Shoes", "Sandals")
    sandal_sandals = ("Footwear", "Sandal", "Sandals")
    assert shoes_sandals in taxonomy.labels and sandal_sandals in taxonomy.labels
    conflicts = taxonomy.leaf_name_conflicts()
    assert conflicts["Sandals"] == [sandal_sandals, shoes_sandals]
    assert "Heels" not in conflicts
    assert all(len(paths) > 1 for paths in conflicts.values())


def test_search_finds_both_sandals_and_the_parent(taxonomy: Taxonomy) -> None:
    hits = taxonomy.search("sandal")
    assert ("Footwear", "Sandal", "Sandals") in hits
    assert ("Footwear", "Shoes", "Sandals") in hits
    assert ("Footwear", "Sandal") in hits
    leaves = set(taxonomy.leaves)
    # Leaves first, then inner nodes; shorter text first within each.
    flags = [h not in leaves for h in hits]
    assert flags == sorted(flags)
    assert hits.index(("Footwear", "Sandal")) > hits.index(("Footwear", "Shoes", "Sandals"))
    assert taxonomy.search("SANDAL", limit=2) == hits[:2]


def test_search_needs_every_word(taxonomy: Taxonomy) -> None:
    assert taxonomy.search("shoes sandals") == [("Footwear", "Shoes", "Sandals")]
    assert taxonomy.search("footwear heels") == [("Footwear", "Shoes", "Heels")]
    assert taxonomy.search("no such thing") == []


def test_json_round_trip(taxonomy: Taxonomy) -> None:
    data = json.loads(json.dumps(taxonomy.to_json()))
    again = Taxonomy.from_json(data)
    assert again == taxonomy
    assert again.paths == taxonomy.paths and again.leaves == taxonomy.leaves
    with pytest.raises(ValueError, match="not a prodcat taxonomy"):
        Taxonomy.from_json({"labels": []})


def test_labels_of_different_depths() -> None:
    tax = Taxonomy.from_paths([("A", "B"), ("A", "B", "C"), ("D",)])
    assert tax.labels == [("A", "B"), ("A", "B", "C"), ("D",)]
    assert tax.leaves == [("A", "B", "C"), ("D",)]  # A > B is a label with a child
    assert tax.depth() == 3
    assert tax != Taxonomy.from_paths([("A", "B", "C"), ("D",)])


@pytest.mark.parametrize("bad", [(), ("A", ""), ("A", "  ")])
def test_rejects_empty_levels(bad: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="level"):
        Taxonomy.from_paths([bad])


def test_rejects_a_bare_string() -> None:
    with pytest.raises(TypeError, match="sequence of level names"):
        Taxonomy.from_paths(["Footwear > Shoes"])

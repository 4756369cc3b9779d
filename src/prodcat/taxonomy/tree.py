"""The category tree of a catalogue.

A class is a full path of level names, ``("Footwear", "Shoes", "Sandals")``, never a bare leaf name:
real catalogues file the same articleType under two parents (``Footwear > Shoes > Sandals`` beside
``Footwear > Sandal > Sandals``), and merging them silently would change what the model learns. Such
names are reported by `Taxonomy.leaf_name_conflicts` so a person can decide.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

SEPARATOR = " > "

# A class or inner node: level names root-first.
CategoryPath = tuple[str, ...]
_JSON_FORMAT = "prodcat.taxonomy"
_JSON_VERSION = 1


def format_path(path: Sequence[str]) -> str:
    """``("Footwear", "Shoes")`` -> ``"Footwear > Shoes"``."""
    return SEPARATOR.join(path)


def parse_path(text: str, separator: str = ">") -> tuple[str, ...]:
    """``"Footwear > Shoes"`` -> ``("Footwear", "Shoes")``; parts are stripped of whitespace.

    Raises `ValueError` naming the text when it is empty or has an empty level (``"A >> B"``).
    """
    if not separator:
        raise ValueError("the separator must be a non-empty string")
    expected = f"expected names separated by {separator!r}, e.g. 'Footwear {separator} Shoes'"
    if not text.strip():
        raise ValueError(f"the category path {text!r} is empty; {expected}")
    parts = tuple(part.strip() for part in text.split(separator))
    if any(not part for part in parts):
        raise ValueError(f"the category path {text!r} has an empty level; {expected}")
    return parts


def _as_path(path: Sequence[str] | str) -> CategoryPath:
    # A str is a Sequence[str] too; treat it as "A > B" text rather than a tuple of characters.
    if isinstance(path, str):
        return parse_path(path) if path.strip() else ()
    return tuple(path)


def _check_label(path: Sequence[str]) -> CategoryPath:
    if isinstance(path, str):
        raise TypeError(f"expected a sequence of level names, got the string {path!r}")
    label = tuple(path)
    if not label:
        raise ValueError("a category path must have at least one level")
    for name in label:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"the category path {label!r} has an empty or non-text level")
    return label


class Taxonomy:
    """Category tree; a class is a full path (tuple of level names).

    A leaf name under two parents is two classes. Built from the label paths of a catalogue, whose
    depths may differ.

    Attributes:
        labels: the distinct given label paths, sorted; the classes a model predicts.
        paths: every node (every prefix of every label), sorted.
        leaves: the nodes without children, sorted. Equal to `labels` unless a label is also the
            parent of another label (``A > B`` and ``A > B > C`` both used as labels).
    """

    def __init__(self, labels: Iterable[Sequence[str]]) -> None:
        self.labels: list[CategoryPath] = sorted({_check_label(label) for label in labels})
        nodes = {label[:k] for label in self.labels for k in range(1, len(label) + 1)}
        self.paths: list[CategoryPath] = sorted(nodes)
        self._nodes = nodes
        self._children: dict[CategoryPath, list[CategoryPath]] = defaultdict(list)
        for node in self.paths:  # sorted, so each child list comes out sorted
            self._children[node[:-1]].append(node)
        self.leaves: list[CategoryPath] = [
            node for node in self.paths if node not in self._children
        ]

    @classmethod
    def from_paths(cls, paths: Iterable[Sequence[str]]) -> Taxonomy:
        """Build the tree from label paths (duplicates are fine)."""
        return cls(paths)

    def _require(self, path: Sequence[str] | str) -> CategoryPath:
        node = _as_path(path)
        if node and node not in self._nodes:
            raise KeyError(f"{format_path(node)!r} is not a node of the taxonomy")
        return node

    def ancestors(self, path: Sequence[str] | str) -> list[CategoryPath]:
        """The proper prefixes of `path`, root-first: ``A > B > C`` -> ``[(A,), (A, B)]``."""
        node = self._require(path)
        return [node[:k] for k in range(1, len(node))]

    def descendants(self, path: Sequence[str] | str) -> list[CategoryPath]:
        """Every node under `path` (not `path` itself), sorted; ``()`` gives the whole tree."""
        node = self._require(path)
        n = len(node)
        return [p for p in self.paths if len(p) > n and p[:n] == node]

    def children(self, path: Sequence[str] | str) -> list[CategoryPath]:
        """The nodes one level under `path`, sorted; ``()`` gives the top level."""
        return list(self._children.get(self._require(path), []))

    def depth(self) -> int:
        """The number of levels of the deepest label (0 for an empty taxonomy)."""
        return max((len(p) for p in self.labels), default=0)

    def search(self, query: str, limit: int | None = None) -> list[CategoryPath]:
        """Nodes whose ``"A > B > C"`` text contains every word of `query`, case-insensitively.

        Leaves come first (they are what a product can be filed under), then shorter paths, then
        alphabetical. An empty query matches every node.
        """
        words = query.casefold().split()
        hits = [p for p in self.paths if all(w in format_path(p).casefold() for w in words)]
        leaves = set(self.leaves)
        hits.sort(key=lambda p: (p not in leaves, len(format_path(p)), p))
        return hits if limit is None else hits[:limit]

    def leaf_name_conflicts(self) -> dict[str, list[CategoryPath]]:
        """Label names that end more than one label path: name -> those paths, sorted by name."""
        by_name: dict[str, list[CategoryPath]] = defaultdict(list)
        for label in self.labels:
            by_name[label[-1]].append(label)
        return {name: paths for name, paths in sorted(by_name.items()) if len(paths) > 1}

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable description; `from_json` rebuilds an equal taxonomy."""
        return {
            "format": _JSON_FORMAT,
            "version": _JSON_VERSION,
            "labels": [list(label) for label in self.labels],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Taxonomy:
        """Inverse of `to_json`."""
        if not isinstance(data, dict) or data.get("format") != _JSON_FORMAT:
            raise ValueError(
                f"not a prodcat taxonomy: expected a dict with format {_JSON_FORMAT!r}"
            )
        if data.get("version") != _JSON_VERSION:
            raise ValueError(
                f"unsupported taxonomy version {data.get('version')!r}; expected {_JSON_VERSION}"
            )
        labels = data.get("labels")
        if not isinstance(labels, list):
            raise ValueError("the taxonomy has no 'labels' list")
        return cls(labels)

    def __contains__(self, path: object) -> bool:
        if isinstance(path, str):
            try:
                return _as_path(path) in self._nodes
            except ValueError:
                return False
        return isinstance(path, Sequence) and tuple(path) in self._nodes

    def __len__(self) -> int:
        """The number of nodes (`paths`), not of labels."""
        return len(self.paths)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Taxonomy):
            return NotImplemented
        return self.labels == other.labels

    __hash__ = None  # type: ignore[assignment]  # mutable lists inside; equality is by value

    def __repr__(self) -> str:
        return (
            f"Taxonomy(n_labels={len(self.labels)}, n_nodes={len(self.paths)}, "
            f"depth={self.depth()})"
        )

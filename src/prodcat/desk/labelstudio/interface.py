"""The labelling interface prodcat gives Label Studio, and reading a category back out of an
annotation's result.

Two interfaces: `taxonomy` (default; Label Studio's <Taxonomy> tag over the category tree, so an
annotator opens Apparel, then Topwear, then picks Tshirts) and `choices` (one flat <Choices> list
of full paths, as before). Both show the photo, the title and the model's top suggestions, and a
one-line text box for a category that is not in the list (imported as a proposed new category).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

FROM_NAME, TO_NAME = "category", "image"
NEW_NAME = "new_category"  # the text box for a category outside the list
INTERFACES = ("taxonomy", "choices")
SEPARATOR = " > "


def labelstudio_config(paths: Sequence[str], kind: str = "taxonomy") -> str:
    """The interface XML over `paths` ('A > B > C'): <Taxonomy> or flat <Choices>."""
    if kind not in INTERFACES:
        raise ValueError(f"interface {kind!r}: expected one of {', '.join(INTERFACES)}")
    control = _taxonomy(paths) if kind == "taxonomy" else _choices(paths)
    return (
        "<View>\n"
        f'  <Image name="{TO_NAME}" value="$image" maxWidth="480px"/>\n'
        '  <Text name="title" value="$title"/>\n'
        '  <Header value="The model suggests (most likely first):" size="5"/>\n'
        '  <Text name="suggestions" value="$suggestions_text"/>\n'
        f"{control}"
        '  <Header value="Not in the list? Type the category as A &gt; B &gt; C:" size="5"/>\n'
        f'  <TextArea name="{NEW_NAME}" toName="{TO_NAME}" rows="1" maxSubmissions="1"'
        ' editable="true"/>\n'
        "</View>\n"
    )


def _choices(paths: Sequence[str]) -> str:
    choices = "".join(f'    <Choice value="{_xml(p)}"/>\n' for p in paths)
    return (
        f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" showInline="false">\n'
        f"{choices}  </Choices>\n"
    )


def _taxonomy(paths: Sequence[str]) -> str:
    tree: dict[str, Any] = {}
    for path in paths:
        node = tree
        for part in split(path):
            node = node.setdefault(part, {})
    # leafsOnly keeps annotators off coarse answers, unless a category is itself a parent.
    leafs_only = not _has_inner_category(paths)
    attrs = f'name="{FROM_NAME}" toName="{TO_NAME}" maxUsages="1" showFullPath="true"'
    attrs += f' pathSeparator="{_xml(SEPARATOR)}"'
    attrs += ' leafsOnly="true"' if leafs_only else ""
    return f"  <Taxonomy {attrs}>\n{''.join(_tree_xml(tree, 2))}  </Taxonomy>\n"


def _tree_xml(tree: dict[str, Any], depth: int) -> Iterable[str]:
    pad = "  " * depth
    for name, children in sorted(tree.items()):
        if children:
            yield f'{pad}<Choice value="{_xml(name)}">\n'
            yield from _tree_xml(children, depth + 1)
            yield f"{pad}</Choice>\n"
        else:
            yield f'{pad}<Choice value="{_xml(name)}"/>\n'


def _has_inner_category(paths: Sequence[str]) -> bool:
    known = {tuple(split(p)) for p in paths}
    return any(path[:n] in known for path in known for n in range(1, len(path)))


def split(path: str) -> list[str]:
    return [part.strip() for part in path.split(">") if part.strip()]


def normalise(path: str) -> str:
    """'A>B > C ' -> 'A > B > C', as the desk stores categories."""
    return SEPARATOR.join(split(path))


def _xml(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
    )


def categories_in(result: Any) -> list[str]:
    """The categories an annotation's `result` holds: <Choices> values (full paths), <Taxonomy>
    paths (lists of names, joined), and the new-category text box; in that order."""
    picked: list[str] = []
    typed: list[str] = []
    for region in result if isinstance(result, list) else []:
        if not isinstance(region, dict):
            continue
        raw = region.get("value")
        value: dict[str, Any] = raw if isinstance(raw, dict) else {}
        picked += [str(c) for c in value.get("choices") or []]
        picked += [SEPARATOR.join(map(str, p)) for p in value.get("taxonomy") or []]
        if region.get("from_name") == NEW_NAME or region.get("type") == "textarea":
            typed += [str(t) for t in value.get("text") or [] if str(t).strip()]
    return [normalise(c) for c in picked + typed if normalise(c)]


def categories_in_min(value: Any) -> list[str]:
    """The same from a JSON_MIN record's field: 'A > B' (Choices, TextArea), a list of
    {'taxonomy': [[...]]} or of {'choices': [...]} / {'text': [...]}."""
    if value is None:
        return []
    if isinstance(value, str):
        return [normalise(value)] if normalise(value) else []
    items = value if isinstance(value, list) else [value]
    regions = [{"value": v} if isinstance(v, dict) else {"value": {"choices": [v]}} for v in items]
    return categories_in(regions) + [
        normalise(str(t)) for v in items if isinstance(v, dict) for t in v.get("text") or []
    ]

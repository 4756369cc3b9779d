"""Grouped, deterministic splits on the real sample."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest

from prodcat.catalogue import Catalogue, Product
from prodcat.catalogue.split import (
    SPLIT_NAMES,
    assign_split,
    group_keys,
    normalise_title,
    split_catalogue,
)


def parts_by_id(parts: dict[str, list[Product]]) -> dict[str, str]:
    return {p.id: name for name, members in parts.items() for p in members}


def product(id_: str, text: str, sha: str | None) -> Product:
    return Product(id=id_, text=text, image=None, label=None, image_sha256=sha, row=0)


@pytest.fixture(scope="module")
def products(sample_catalogue: Catalogue) -> list[Product]:
    return sample_catalogue.products


def test_parts_cover_every_product_once(products: list[Product]) -> None:
    parts = split_catalogue(products)
    assert tuple(parts) == SPLIT_NAMES
    assert sorted(p.id for members in parts.values() for p in members) == sorted(
        p.id for p in products
    )
    order = {p.id: i for i, p in enumerate(products)}
    for members in parts.values():  # file order is kept inside each part
        assert [order[p.id] for p in members] == sorted(order[p.id] for p in members)


def test_deterministic_and_independent_of_row_order(products: list[Product]) -> None:
    first = parts_by_id(split_catalogue(products))
    assert parts_by_id(split_catalogue(products)) == first
    shuffled = list(products)
    random.Random(7).shuffle(shuffled)
    assert parts_by_id(split_catalogue(shuffled)) == first
    assert parts_by_id(split_catalogue(shuffled, by="image+title")) == parts_by_id(
        split_catalogue(products, by="image+title")
    )


def test_identical_photos_share_a_part(products: list[Product]) -> None:
    where = parts_by_id(split_catalogue(products))
    groups: dict[str, list[str]] = defaultdict(list)
    for p in products:
        assert p.image_sha256 is not None
        groups[p.image_sha256].append(p.id)
    duplicates = [ids for ids in groups.values() if len(ids) > 1]
    assert duplicates, "the sample is meant to contain byte-identical photos"
    for ids in duplicates:
        assert len({where[i] for i in ids}) == 1, ids


@pytest.mark.parametrize("by", ["image", "image+title"])
def test_fractions_are_roughly_respected(products: list[Product], by: str) -> None:
    parts = split_catalogue(products, by=by)  # type: ignore[arg-type]
    shares = [len(parts[name]) / len(products) for name in SPLIT_NAMES]
    for share, target in zip(shares, (0.8, 0.1, 0.1), strict=True):
        assert abs(share - target) <= 0.04, shares


def test_image_and_title_never_splits_identical_titles(products: list[Product]) -> None:
    where = parts_by_id(split_catalogue(products, by="image+title"))
    by_title: dict[str, set[str]] = defaultdict(set)
    by_photo: dict[str | None, set[str]] = defaultdict(set)
    for p in products:
        by_title[normalise_title(p.text)].add(where[p.id])
        by_photo[p.image_sha256].add(where[p.id])
    assert all(len(parts) == 1 for parts in by_title.values())
    assert all(len(parts) == 1 for parts in by_photo.values())
    assert len(by_title) < len(products)  # the sample has repeated titles, so this was tested


def test_image_and_title_groups_are_transitive() -> None:
    items = [
        product("a", "Red Shoe", "sha-1"),
        product("b", "red  shoe!", "sha-2"),  # same title as a
        product("c", "Blue Bag", "sha-2"),  # same photo as b
        product("d", "Other", None),
    ]
    keys = group_keys(items, by="image+title")
    assert keys[0] == keys[1] == keys[2] == "image:sha-1"  # the smallest member key
    assert keys[3] == "title:other"
    assert group_keys(list(reversed(items)), by="image+title") == list(reversed(keys))
    assert group_keys(items) == ["image:sha-1", "image:sha-2", "image:sha-2", "title:other"]


def test_products_without_photo_or_title_are_keyed_by_id() -> None:
    assert group_keys([product("7", " !! ", None)]) == ["id:7"]


def test_adding_rows_does_not_move_existing_products(products: list[Product]) -> None:
    old = products[:1000]
    before = parts_by_id(split_catalogue(old))
    after = parts_by_id(split_catalogue(products))
    assert {i: after[i] for i in before} == before


def test_adding_rows_moves_only_merged_title_groups(products: list[Product]) -> None:
    # With "image+title" a new row can join two old groups; only then may a product move.
    old = products[:1000]
    keys_before = group_keys(old, by="image+title")
    keys_after = group_keys(products, by="image+title")[:1000]
    before = parts_by_id(split_catalogue(old, by="image+title"))
    after = parts_by_id(split_catalogue(products, by="image+title"))
    same = [p.id for p, k0, k1 in zip(old, keys_before, keys_after, strict=True) if k0 == k1]
    assert len(same) > 0.95 * len(old)
    assert {i: after[i] for i in same} == {i: before[i] for i in same}


def test_assign_split() -> None:
    keys = [f"key-{i}" for i in range(2000)]
    assert {assign_split(k) for k in keys} == set(SPLIT_NAMES)
    assert assign_split("key-1") == assign_split("key-1")
    assert {assign_split(k, (1.0, 0.0, 0.0)) for k in keys} == {"train"}
    assert {assign_split(k, (0.0, 0.0, 1.0)) for k in keys} == {"test"}
    assert {assign_split(k, (0.5, 0.5, 0.0)) for k in keys} == {"train", "validation"}


@pytest.mark.parametrize(
    "fractions", [(0.8, 0.2), (0.8, 0.1, 0.2), (1.1, -0.05, -0.05), (float("nan"), 0.5, 0.5)]
)
def test_bad_fractions(fractions: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="fractions"):
        assign_split("k", fractions)
    with pytest.raises(ValueError, match="fractions"):
        split_catalogue([], fractions=fractions)


def test_bad_group_mode() -> None:
    with pytest.raises(ValueError, match="'image' or 'image\\+title'"):
        group_keys([], by="title")  # type: ignore[arg-type]

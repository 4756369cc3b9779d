"""Catalogue loading and validation, on the bundled sample and on bad inputs written to tmp_path."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from prodcat.catalogue import (
    PROBLEM_KINDS,
    Catalogue,
    CatalogueError,
    ColumnMapping,
    Problem,
    Product,
    format_summary,
    load_catalogue,
    summarise,
)
from prodcat.catalogue.columns import close_column

LEVELS = ("masterCategory", "subCategory", "articleType")


@pytest.fixture(scope="module")
def sample_df(sample_csv: Path) -> pd.DataFrame:
    return pd.read_csv(sample_csv, dtype=str, keep_default_na=False)


@pytest.fixture
def linked(tmp_path: Path, sample_dir: Path) -> Path:
    """tmp_path with images/ linked to the sample's photos, so relative paths keep working."""
    (tmp_path / "images").symlink_to(sample_dir / "images", target_is_directory=True)
    return tmp_path


def content(products: list[Product]) -> list[tuple[object, ...]]:
    """What must not depend on the file format (rows differ: lines vs row indices)."""
    return [(p.id, p.text, p.image, p.label, p.image_sha256) for p in products]


def by_kind(catalogue: Catalogue, kind: str) -> list[Problem]:
    return [p for p in catalogue.problems if p.kind == kind]


def only(catalogue: Catalogue, kind: str) -> Problem:
    found = by_kind(catalogue, kind)
    assert len(found) == 1, [p.message for p in catalogue.problems]
    return found[0]


# -- the sample -----------------------------------------------------------------------------------


def test_sample_loads_every_row(sample_catalogue: Catalogue, sample_df: pd.DataFrame) -> None:
    cat = sample_catalogue
    assert len(cat) == len(sample_df) == 1501
    assert cat.rejected == [] and cat.labelled
    assert [p.id for p in cat.products] == list(sample_df["id"])
    # Whitespace is collapsed: real titles have doubled spaces.
    assert [p.text for p in cat.products] == [" ".join(t.split()) for t in sample_df["title"]]
    first = cat.products[0]
    assert first.row == 2 and cat.products[-1].row == 1502
    assert first.label == tuple(sample_df["category"][0].split(" > "))
    assert first.image is not None and first.image.is_absolute() and first.image.is_file()
    assert first.image_sha256 == hashlib.sha256(first.image.read_bytes()).hexdigest()
    assert set(cat.by_id()) == set(sample_df["id"])
    assert {p.kind for p in cat.warnings} == {"leaf_under_several_parents"}


def test_leaf_under_several_parents_on_the_sample(
    sample_catalogue: Catalogue, sample_df: pd.DataFrame
) -> None:
    counts = sample_df["category"].value_counts()
    by_leaf: dict[str, dict[str, int]] = {}
    for path, n in counts.items():
        by_leaf.setdefault(str(path).split(" > ")[-1], {})[str(path)] = int(n)
    several = {leaf: paths for leaf, paths in by_leaf.items() if len(paths) > 1}
    warnings = by_kind(sample_catalogue, "leaf_under_several_parents")
    assert len(warnings) == len(several)  # one warning per leaf name
    sandals = [w for w in warnings if w.message.startswith("products.csv: 'Sandals'")]
    assert len(sandals) == 1
    assert several["Sandals"] == {
        "Footwear > Sandal > Sandals": 57,
        "Footwear > Shoes > Sandals": 2,
    }
    assert (
        "'Sandals' occurs under 2 parents: Footwear > Sandal > Sandals (57), "
        "Footwear > Shoes > Sandals (2); each full path is its own class"
    ) in sandals[0].message
    assert sandals[0].severity == "warning" and sandals[0].column == "category"
    assert sandals[0].row is None and sandals[0].source == "products.csv"


# -- formats and column mappings ------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".tsv", ".jsonl", ".ndjson", ".parquet"])
def test_every_format_loads_the_same_products(
    suffix: str, linked: Path, sample_df: pd.DataFrame, sample_catalogue: Catalogue
) -> None:
    path = linked / f"products{suffix}"
    if suffix == ".tsv":
        sample_df.to_csv(path, sep="\t", index=False)
    elif suffix == ".parquet":
        sample_df.assign(id=sample_df["id"].astype("int64")).to_parquet(path)  # ints -> "3221"
    else:
        sample_df.assign(id=sample_df["id"].astype("int64")).to_json(
            path, orient="records", lines=True, force_ascii=False
        )
    cat = load_catalogue(path, verify_images=False)
    assert cat.rejected == []
    assert content(cat.products) == content(sample_catalogue.products)
    first_row = 2 if suffix == ".tsv" else 1  # TSV: header is line 1; JSONL lines; Parquet rows
    assert [p.row for p in cat.products[:3]] == [first_row, first_row + 1, first_row + 2]


def test_renamed_columns_and_joined_text(linked: Path, sample_df: pd.DataFrame) -> None:
    df = sample_df.rename(
        columns={"id": "sku", "title": "name", "image": "photo", "category": "cat"}
    ).head(20)
    df["description"] = ["  Soft   cotton  " if i % 2 else "" for i in range(len(df))]
    df.loc[0, "name"] = "Ends with a stop."
    df.to_csv(linked / "shop.csv", index=False)
    mapping = ColumnMapping(
        id_column="sku",
        text_columns=["name", "description"],  # type: ignore[arg-type]  # lists are accepted
        image_column="photo",
        label_column="cat",
    )
    cat = load_catalogue(linked / "shop.csv", mapping)
    assert cat.rejected == [] and len(cat) == 20 and cat.labelled
    assert mapping.text_columns == ("name", "description")
    assert cat.products[0].text == "Ends with a stop."
    assert cat.products[1].text == f"{df['name'][1]}. Soft cotton"
    assert cat.products[2].text == df["name"][2]
    assert cat.products[3].label == tuple(df["cat"][3].split(" > "))


def test_one_label_column_per_level(
    linked: Path, sample_df: pd.DataFrame, sample_catalogue: Catalogue
) -> None:
    levels = sample_df["category"].str.split(" > ", expand=True)
    df = sample_df.drop(columns="category").assign(
        **dict(zip(LEVELS, levels.T.values, strict=True))
    )
    df.to_csv(linked / "levels.csv", index=False)
    cat = load_catalogue(linked / "levels.csv", ColumnMapping(label_columns=LEVELS))
    assert cat.rejected == []
    assert [p.label for p in cat.products] == [p.label for p in sample_catalogue.products]
    assert cat.taxonomy() == sample_catalogue.taxonomy()
    warning = by_kind(cat, "leaf_under_several_parents")[0]
    assert warning.column == "articleType"


def test_label_levels_may_end_early_but_not_skip(linked: Path) -> None:
    (linked / "levels.csv").write_text(
        "id,title,image,l1,l2,l3\n"
        "1,Shoe,images/3221.jpg,Footwear,Shoes,\n"
        "2,Shoe,images/3226.jpg,Footwear,,Sandals\n"
        "3,Shoe,images/3253.jpg,,,\n"
    )
    cat = load_catalogue(linked / "levels.csv", ColumnMapping(label_columns=("l1", "l2", "l3")))
    assert [p.label for p in cat.products] == [("Footwear", "Shoes")]
    gap, empty = by_kind(cat, "bad_label")
    assert (gap.row, gap.id, gap.column) == (3, "2", "l2")
    assert "the level is empty but the deeper 'l3' is not" in gap.message
    assert (empty.row, empty.id, empty.column) == (4, "3", "l1")
    assert "the category is empty" in empty.message


def test_unlabelled_catalogue(linked: Path, sample_df: pd.DataFrame) -> None:
    sample_df.drop(columns="category").head(30).to_csv(linked / "new.csv", index=False)
    cat = load_catalogue(linked / "new.csv")
    assert len(cat) == 30 and cat.rejected == []
    assert all(p.label is None for p in cat.products) and not cat.labelled
    with pytest.raises(ValueError, match="no category labels"):
        cat.taxonomy()
    summary = summarise(cat)
    assert summary["labelled"] is False and summary["n_classes"] == 0
    assert summary["classes_per_level"] == [] and summary["class_sizes"] == {}


def test_label_columns_named_by_the_user_are_required(
    linked: Path, sample_df: pd.DataFrame
) -> None:
    sample_df.drop(columns="category").head(3).to_csv(linked / "new.csv", index=False)
    for mapping in (ColumnMapping(label_columns=LEVELS), ColumnMapping(label_column="cat")):
        with pytest.raises(CatalogueError, match="expected the columns"):
            load_catalogue(linked / "new.csv", mapping)
    with pytest.raises(CatalogueError, match=r"missing: \['category'\]"):
        load_catalogue(linked / "new.csv", require_labels=True)
    cat = load_catalogue(
        linked / "new.csv", ColumnMapping(label_column="cat"), require_labels=False
    )
    assert not cat.labelled


def test_absolute_image_paths(tmp_path: Path, sample_dir: Path) -> None:
    image = sample_dir / "images" / "3221.jpg"
    (tmp_path / "abs.csv").write_text(f"id,title,image\n1,Shoe,{image}\n2,Shoe,/no/such.jpg\n")
    cat = load_catalogue(tmp_path / "abs.csv")
    assert [p.image for p in cat.products] == [image.resolve()]
    missing = only(cat, "missing_image")
    assert "the file /no/such.jpg does not exist" in missing.message
    assert "relative to" not in missing.message


def test_spellings_of_one_image_path_give_one_path(linked: Path, sample_dir: Path) -> None:
    # images/ is a symlink to the sample's folder: the path is the real file's, however written.
    (linked / "sub").mkdir()
    rows = ["images/3221.jpg", "sub/../images/3221.jpg", "images\\3221.jpg", "./images/3221.jpg"]
    lines = [f"{i},Shoe,{value}" for i, value in enumerate(rows)]
    (linked / "paths.csv").write_text("id,title,image\n" + "\n".join(lines) + "\n")
    cat = load_catalogue(linked / "paths.csv")
    real = (sample_dir / "images" / "3221.jpg").resolve()
    assert [p.image for p in cat.products] == [real] * len(rows)
    assert len({p.image_sha256 for p in cat.products}) == 1


def test_jsonl_lines_and_bad_json(linked: Path) -> None:
    (linked / "p.jsonl").write_text(
        '{"id": 1, "title": "Shoe", "image": "images/3221.jpg", "category": ["Footwear", "Shoes"]}'
        "\n"
        "\n"
        '{"id": 2, "title": "Shoe", "image": "images/3226.jpg"\n'
        '["not", "an", "object"]\n'
        '{"id": 3, "title": null, "image": "images/3253.jpg", "category": "A > B"}\n'
    )
    cat = load_catalogue(linked / "p.jsonl")
    assert [(p.id, p.row, p.label) for p in cat.products] == [
        ("1", 1, ("Footwear", "Shoes")),
        ("3", 5, ("A", "B")),
    ]
    bad_json, not_object = by_kind(cat, "malformed_row")
    assert bad_json.row == 3 and "not valid JSON" in bad_json.message
    assert not_object.row == 4 and "expected a JSON object" in not_object.message
    assert only(cat, "empty_text").row == 5


# -- the folder layout ----------------------------------------------------------------------------


def test_folder_tree(tmp_path: Path, sample_dir: Path) -> None:
    root = tmp_path / "shop"
    sports = root / "Footwear" / "Shoes" / "Sports Shoes"
    tees = root / "Apparel" / "Topwear" / "Tshirts"
    for folder in (sports, tees):
        folder.mkdir(parents=True)
    shutil.copy(sample_dir / "images" / "3221.jpg", sports / "3221.jpg")
    (sports / "3221.txt").write_text("Puma Men's  Kuris\nWhite Shoe\n")
    shutil.copy(sample_dir / "images" / "3226.jpg", sports / "3226.JPEG")  # no .txt beside it
    (tees / "900.txt").write_text("Plain white tee")  # text only
    (tees / "901.jpg").write_text("this is text, not a photo")
    (tees / ".DS_Store").write_bytes(b"\0\1")
    (root / "README.md").write_text("not a product")

    cat = load_catalogue(root)
    assert cat.labelled
    products = cat.by_id()
    assert set(products) == {"3221", "3226", "900"}
    assert products["3221"].label == ("Footwear", "Shoes", "Sports Shoes")
    assert products["3221"].text == "Puma Men's Kuris White Shoe"
    assert products["3221"].image == (sports / "3221.jpg").resolve()
    assert products["3226"].text == ""
    assert products["900"].image is None and products["900"].label == (
        "Apparel",
        "Topwear",
        "Tshirts",
    )
    assert {p.row for p in cat.products} == {0}

    bad = only(cat, "unreadable_image")
    assert bad.source == "Apparel/Topwear/Tshirts/901.jpg" and bad.id == "901"
    assert "not an image" in bad.message
    assert only(cat, "no_image").id == "900"
    assert only(cat, "empty_text").id == "3226"  # some products have a .txt, so one is expected
    summary = summarise(cat)
    assert summary["n_rows"] == 4 and summary["classes_per_level"] == [2, 2, 2]


def test_folder_tree_problems(tmp_path: Path, sample_dir: Path) -> None:
    root = tmp_path / "shop"
    (root / "Shoes").mkdir(parents=True)
    (root / "Bags").mkdir()
    photo = sample_dir / "images" / "3221.jpg"
    shutil.copy(photo, root / "Shoes" / "1.jpg")
    shutil.copy(photo, root / "Bags" / "1.jpg")  # the same id in another class
    shutil.copy(photo, root / "Shoes" / "2.jpg")
    shutil.copy(photo, root / "Shoes" / "2.png")  # one id, two photos
    shutil.copy(photo, root / "3.jpg")  # no class folder
    (root / "Shoes" / "4.txt").write_text("   ")  # neither text nor photo

    cat = load_catalogue(root)
    assert sorted((p.id, p.label) for p in cat.products) == [("1", ("Bags",)), ("2", ("Shoes",))]
    duplicates = by_kind(cat, "duplicate_id")
    assert {(d.source, d.id) for d in duplicates} == {("Shoes/1.jpg", "1"), ("Shoes/2.png", "2")}
    assert any("also used by Bags/1.jpg" in d.message for d in duplicates)
    assert only(cat, "bad_label").source == "3.jpg"
    assert "expected it inside a class folder" in only(cat, "bad_label").message
    assert only(cat, "no_content").id == "4"
    # A .txt exists in the tree, so photos without one are flagged (an image-only tree is not).
    assert {p.id for p in by_kind(cat, "empty_text")} == {"1", "2"}


def test_flat_folder_is_unlabelled(tmp_path: Path, sample_dir: Path) -> None:
    for name in ("3221.jpg", "3226.jpg"):
        shutil.copy(sample_dir / "images" / name, tmp_path / name)
    cat = load_catalogue(tmp_path)
    assert len(cat) == 2 and not cat.labelled and cat.problems == []


# -- row problems ---------------------------------------------------------------------------------


@pytest.fixture
def bad_catalogue(linked: Path, sample_dir: Path) -> Catalogue:
    photo = (sample_dir / "images" / "3221.jpg").read_bytes()
    broken = linked / "broken"
    broken.mkdir()
    (broken / "garbage.jpg").write_bytes(b"definitely not a jpeg " * 20)
    (broken / "truncated.jpg").write_bytes(photo[: int(len(photo) * 0.4)])
    (broken / "empty.jpg").write_bytes(b"")
    (linked / "bad.csv").write_text(
        "id,title,image,category\n"
        "1,Good shoe,images/3221.jpg,Footwear > Shoes > Casual Shoes\n"  # line 2
        "2,Lost shoe,images/nope.jpg,Footwear > Shoes > Casual Shoes\n"  # 3
        "3,Garbage,broken/garbage.jpg,Footwear > Shoes > Casual Shoes\n"  # 4
        "4,Truncated,broken/truncated.jpg,Footwear > Shoes > Casual Shoes\n"  # 5
        "5,Empty file,broken/empty.jpg,Footwear > Shoes > Casual Shoes\n"  # 6
        "6,,images/3226.jpg,Footwear > Shoes > Casual Shoes\n"  # 7 empty text
        "7,Words only,,Footwear > Shoes > Casual Shoes\n"  # 8 no image
        "8,,,Footwear > Shoes > Casual Shoes\n"  # 9 neither
        "1,Same id again,images/3253.jpg,Footwear > Shoes > Casual Shoes\n"  # 10
        "9,Bad label,images/3253.jpg,Footwear >  > Sandals\n"  # 11
        ",No id,images/3253.jpg,Footwear > Shoes > Casual Shoes\n"  # 12
        "10,NA,images/3253.jpg,Footwear > Shoes > Casual Shoes\n"  # 13 'NA' is a title
        '11,"Two\nlines",images/3298.jpg,Footwear > Shoes > Casual Shoes\n'  # 14-15
        "12,After the quoted newline,images/gone.jpg,Footwear > Shoes > Casual Shoes\n"  # 16
        "13,Web photo,https://example.com/1.jpg,Footwear > Shoes > Casual Shoes\n"  # 17
        "14,Too,many,fields,here\n"  # 18
        "\n"
        "15,  Spaced   out  ,images/3298.jpg,Footwear > Shoes > Casual Shoes,,\n"  # 20 padded
    )
    return load_catalogue(linked / "bad.csv")


def test_one_bad_row_never_stops_the_rest(bad_catalogue: Catalogue) -> None:
    cat = bad_catalogue
    assert [p.id for p in cat.products] == ["1", "6", "7", "10", "11", "15"]
    assert [p.row for p in cat.products] == [2, 7, 8, 13, 14, 20]
    summary = summarise(cat)
    assert summary["n_rows"] == 17  # the blank line is not a row; the quoted newline is one row
    assert summary["n_products"] + summary["n_rejected"] == summary["n_rows"]
    assert [p.row for p in cat.problems] == sorted(p.row or 0 for p in cat.problems)
    assert set(summary["problems_by_kind"]) <= set(PROBLEM_KINDS)


def test_text_is_read_as_text(bad_catalogue: Catalogue) -> None:
    products = bad_catalogue.by_id()
    assert products["10"].text == "NA"
    assert products["11"].text == "Two lines"
    assert products["15"].text == "Spaced out"


def test_missing_image(bad_catalogue: Catalogue, linked: Path) -> None:
    lost, gone, url = by_kind(bad_catalogue, "missing_image")
    assert (lost.row, lost.id, lost.column, lost.severity) == (3, "2", "image", "error")
    assert lost.source == "bad.csv"
    assert lost.message == (
        f"bad.csv line 3 (id 2), column 'image': the file images/nope.jpg does not exist; "
        f"expected a path relative to {linked.resolve()}"
    )
    assert (gone.row, gone.id) == (16, "12")  # line numbers count the quoted newline
    assert (url.row, url.id) == (17, "13") and "is a URL" in url.message


@pytest.mark.parametrize(
    ("row", "id_", "reason"),
    [
        (4, "3", "not an image Pillow can read"),
        (5, "4", "corrupt or truncated"),
        (6, "5", "the file is empty (0 bytes)"),
    ],
)
def test_unreadable_image(bad_catalogue: Catalogue, row: int, id_: str, reason: str) -> None:
    (problem,) = [p for p in by_kind(bad_catalogue, "unreadable_image") if p.row == row]
    assert (problem.id, problem.column, problem.severity) == (id_, "image", "error")
    assert f"bad.csv line {row} (id {id_}), column 'image': the file broken/" in problem.message
    assert reason in problem.message


def test_empty_text_is_a_warning(bad_catalogue: Catalogue) -> None:
    problem = only(bad_catalogue, "empty_text")
    assert (problem.row, problem.id, problem.column, problem.severity) == (
        7,
        "6",
        "title",
        "warning",
    )
    assert "classified from its photo alone" in problem.message
    assert bad_catalogue.by_id()["6"].text == ""


def test_no_image_is_a_warning(bad_catalogue: Catalogue) -> None:
    problem = only(bad_catalogue, "no_image")
    assert (problem.row, problem.id, problem.column, problem.severity) == (
        8,
        "7",
        "image",
        "warning",
    )
    product = bad_catalogue.by_id()["7"]
    assert product.image is None and product.image_sha256 is None


def test_neither_text_nor_image(bad_catalogue: Catalogue) -> None:
    problem = only(bad_catalogue, "no_content")
    assert (problem.row, problem.id, problem.severity) == (9, "8", "error")
    assert "neither text nor an image; expected text in 'title' or an image path" in problem.message


def test_duplicate_id_names_both_lines(bad_catalogue: Catalogue) -> None:
    problem = only(bad_catalogue, "duplicate_id")
    assert (problem.row, problem.id, problem.column) == (10, "1", "id")
    assert problem.message.startswith("bad.csv line 10 (id 1), column 'id':")
    assert "already used on line 2" in problem.message
    assert bad_catalogue.by_id()["1"].text == "Good shoe"  # the first one is kept


def test_bad_label(bad_catalogue: Catalogue) -> None:
    problem = only(bad_catalogue, "bad_label")
    assert (problem.row, problem.id, problem.column) == (11, "9", "category")
    assert problem.message == (
        "bad.csv line 11 (id 9), column 'category': the category path 'Footwear >  > Sandals' "
        "has an empty level; expected names separated by '>', e.g. 'Footwear > Shoes'"
    )


def test_missing_id(bad_catalogue: Catalogue) -> None:
    problem = only(bad_catalogue, "missing_id")
    assert (problem.row, problem.id, problem.column) == (12, None, "id")
    assert problem.message.startswith("bad.csv line 12, column 'id': the id is empty")


def test_malformed_row(bad_catalogue: Catalogue) -> None:
    problem = only(bad_catalogue, "malformed_row")
    assert problem.row == 18
    assert "has 5 fields but the header has 4" in problem.message


def test_without_verification_only_hashes(linked: Path, bad_catalogue: Catalogue) -> None:
    cat = load_catalogue(linked / "bad.csv", verify_images=False)
    # Corrupt photos pass unverified; missing and empty files are still caught.
    assert {"3", "4"} <= set(cat.by_id())
    unreadable = by_kind(cat, "unreadable_image")
    assert [p.id for p in unreadable] == ["5"]
    assert len(by_kind(cat, "missing_image")) == 3
    garbage = cat.by_id()["3"]
    assert garbage.image is not None
    assert garbage.image_sha256 == hashlib.sha256(garbage.image.read_bytes()).hexdigest()


def test_photos_known_to_decode_are_not_decoded_again(
    linked: Path, bad_catalogue: Catalogue
) -> None:
    """`decoded` vouches for hashes (the feature cache's); everything else is still decoded."""
    garbage = hashlib.sha256((linked / "broken" / "garbage.jpg").read_bytes()).hexdigest()
    asked: list[str] = []

    def decoded(key: str) -> bool:
        asked.append(key)
        return key == garbage

    cat = load_catalogue(linked / "bad.csv", decoded=decoded)
    # The vouched-for garbage passes as the cache says; the truncated photo is still caught, and
    # the empty file is caught without asking.
    assert "3" in cat.by_id() and "4" not in cat.by_id()
    assert {p.id for p in by_kind(cat, "unreadable_image")} == {"4", "5"}
    assert garbage in asked and hashlib.sha256(b"").hexdigest() not in asked


def test_progress_bar_goes_to_stderr(
    linked: Path, bad_catalogue: Catalogue, capsys: pytest.CaptureFixture[str]
) -> None:
    load_catalogue(linked / "bad.csv", progress=True)
    captured = capsys.readouterr()
    assert "checking images" in captured.err and captured.out == ""


# -- whole-file problems --------------------------------------------------------------------------


def test_missing_columns_lists_the_columns_found(tmp_path: Path) -> None:
    (tmp_path / "products.csv").write_text("img,name,sku\nimages/1.jpg,Shoe,1\n")
    with pytest.raises(CatalogueError) as info:
        load_catalogue(tmp_path / "products.csv")
    message = str(info.value)
    assert message.startswith(
        "products.csv: expected the columns ['id', 'title', 'image'], "
        "but only ['img', 'name', 'sku'] were found"
    )
    assert "--id-column / --text-column / --image-column / --label-column" in message


def test_missing_columns_suggests_near_names(tmp_path: Path) -> None:
    (tmp_path / "p.tsv").write_text("ID\tTitle\timage\n1\tShoe\ta.jpg\n")
    with pytest.raises(CatalogueError, match="did you mean 'ID' for 'id', 'Title' for 'title'"):
        load_catalogue(tmp_path / "p.tsv")
    with pytest.raises(CatalogueError, match="pass --id-column ID --text-column Title\\)"):
        load_catalogue(tmp_path / "p.tsv")


@pytest.mark.parametrize(
    ("found", "near"),
    [
        (["id", "Category"], "Category"),
        (["id", " category "], " category "),
        (["id", "CATEGORY", "categroy"], "CATEGORY"),  # case and spacing first
        (["id", "categroy"], "categroy"),
        (["id", "Categories"], "Categories"),
        (["id", "subCategory", "masterCategory"], None),  # other fields, not misspellings
        (["id", "category_id"], None),
        (["id", "articleType", "Kategorie"], None),
    ],
)
def test_close_column(found: list[str], near: str | None) -> None:
    assert close_column("category", found) == near


def test_a_near_miss_of_the_label_column_is_an_error_not_unlabelled(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text("id,title,image,Category\n1,Shoe,,A > B\n")
    with pytest.raises(CatalogueError) as info:
        load_catalogue(tmp_path / "p.csv")
    assert str(info.value) == (
        "p.csv: no column 'category'; did you mean 'Category'? pass --label-column Category "
        "(columns found: ['id', 'title', 'image', 'Category'])"
    )
    # A command that only labels does not need the labels: it reads the catalogue unlabelled.
    assert not load_catalogue(tmp_path / "p.csv", require_labels=False).labelled
    fixed = load_catalogue(tmp_path / "p.csv", ColumnMapping(label_column="Category"))
    assert fixed.products[0].label == ("A", "B")


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("nope.csv", None, "no such file or folder"),
        ("products.xlsx", "x", r"unknown catalogue format '.xlsx'; expected one of .csv, .tsv"),
        ("empty.csv", "", "the file is empty; expected a header line"),
        ("latin1.csv", "id,title,image\n1,Caf\xe9,a.jpg\n", "not UTF-8"),
        ("bad.parquet", "not parquet", "cannot be read as Parquet"),
        (
            "twice.csv",
            "id,title,image,title\n",
            r"names the column\(s\) \['title'\] more than once",
        ),
    ],
)
def test_whole_file_problems(tmp_path: Path, name: str, text: str | None, match: str) -> None:
    if text is not None:
        (tmp_path / name).write_bytes(text.encode("latin-1"))
    with pytest.raises(CatalogueError, match=match):
        load_catalogue(tmp_path / name)


def test_column_mapping_validates() -> None:
    with pytest.raises(TypeError, match="not the string 'title'"):
        ColumnMapping(text_columns="title")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="label_columns"):
        ColumnMapping(label_columns=())
    with pytest.raises(ValueError, match="separator"):
        ColumnMapping(separator="")


# -- summary --------------------------------------------------------------------------------------


def test_summary_matches_pandas(
    sample_catalogue: Catalogue, sample_df: pd.DataFrame, sample_dir: Path
) -> None:
    summary = summarise(sample_catalogue)
    json.dumps(summary)  # serialisable
    sizes = sample_df["category"].value_counts()
    assert summary["n_rows"] == summary["n_products"] == len(sample_df)
    assert summary["n_rejected"] == 0 and summary["labelled"] is True
    assert summary["n_classes"] == sample_df["category"].nunique()
    assert summary["class_sizes"] == {str(k): int(v) for k, v in sizes.items()}
    assert list(summary["class_sizes"].values()) == sorted(sizes, reverse=True)
    levels = sample_df["category"].str.split(" > ", expand=True)
    expected_levels = [levels.iloc[:, : k + 1].drop_duplicates().shape[0] for k in range(3)]
    assert summary["classes_per_level"] == expected_levels
    assert summary["long_tail"] == {
        "top10_share": pytest.approx(sizes.nlargest(10).sum() / len(sample_df)),
        "n_classes_lt_10": int((sizes < 10).sum()),
        "n_classes_lt_20": int((sizes < 20).sum()),
    }
    digests = Counter(
        hashlib.sha256((sample_dir / image).read_bytes()).hexdigest()
        for image in sample_df["image"]
    )
    groups = [n for n in digests.values() if n > 1]
    assert groups, "the sample is meant to contain byte-identical photos"
    assert summary["duplicate_photos"] == {
        "n_groups": len(groups),
        "n_products": sum(groups),
        "largest_group": max(groups),
    }
    assert summary["problems_by_kind"] == {"leaf_under_several_parents": summary["n_warnings"]}
    assert summary["rejected"] == []
    assert set(summary["warnings"][0]) == {"id", "row", "kind", "message"}


def test_summary_lists_rejected_rows(bad_catalogue: Catalogue) -> None:
    summary = summarise(bad_catalogue)
    assert summary["problems_by_kind"]["unreadable_image"] == 3
    assert summary["rejected"][0] == {
        "id": "2",
        "row": 3,
        "kind": "missing_image",
        "message": bad_catalogue.rejected[0].message,
    }
    assert len(summary["warnings"]) == summary["n_warnings"] == 2


def test_format_summary_renders(sample_catalogue: Catalogue, bad_catalogue: Catalogue) -> None:
    console = Console(record=True, width=140)
    console.print(format_summary(summarise(sample_catalogue)))
    console.print(format_summary(summarise(bad_catalogue), max_problems=2))
    text = console.export_text()
    assert "1,501 of 1,501 rows accepted" in text
    assert "Apparel > Topwear > Tshirts" in text and "more" in text
    assert "16 groups of byte-identical photos" in text
    assert "learns 20 of 29 classes by default (those with at least 5 training products)" in text
    assert "Rejected (11)" in text and "missing_image" in text and "and 9 more" in text


def test_format_summary_shows_user_text_verbatim() -> None:
    product = Product("1", "Tote", None, ("Bags [new]",), None, 2)
    cat = Catalogue(Path("[x].csv"), [product], [])
    console = Console(record=True, width=100)
    console.print(format_summary(summarise(cat)))
    text = console.export_text()
    assert "Bags [new]" in text and "[x].csv" in text  # not swallowed as rich markup

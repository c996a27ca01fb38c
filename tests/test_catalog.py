"""The pinned model table (kcnn.catalog) against the models as built, and the README's
model table against the catalog."""

import pathlib

import pytest

import kcnn
from kcnn import catalog, registry

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- models:start -->", "<!-- models:end -->"


def test_the_catalog_lists_every_registered_model():
    assert list(catalog.NAMES) == registry.list_models()
    registered = [row.name for row in catalog.ROWS if not row.arguments]
    assert sorted(registered) == registry.list_models()  # once each
    families = [registry.MODELS[name].family for name in registered]
    assert list(dict.fromkeys(families)) == list(dict.fromkeys(spec.family for spec in registry.MODELS.values()))


@pytest.mark.parametrize("row", catalog.ROWS, ids=lambda row: row.label)
def test_every_figure_of_the_catalog_is_the_built_models(row):
    info = registry.model_info(row.name, **row.arguments)
    spec = registry.get_spec(row.name)
    assert (spec.family, spec.year, spec.paper) == (row.family, row.year, row.paper)
    assert info["input_shape"] == row.input_shape
    assert (info["params"], info["trainable_params"], info["macs"]) == (row.params, row.trainable_params, row.macs)


def test_the_readme_model_table_is_generated_from_the_catalog():
    text = README.read_text()
    table = text[text.index(START) + len(START) : text.index(END)].strip()
    assert table == catalog.format_markdown(catalog.rows())


def test_macs_are_shown_with_three_significant_figures():
    macs = (512, 30_720, 416_520, 38_896_896, 724_406_816, 7_801_405_440, 15_470_264_320)
    assert [catalog.format_macs(m) for m in macs] == ["512", "30.7 K", "417 K", "38.9 M", "724 M", "7.80 G", "15.5 G"]


def test_rows_filter_by_pattern_in_lecture_order():
    assert [row.label for row in catalog.rows("lenet*")] == ["lenet5", "lenet5(variant='paper')"]
    assert [row.name for row in catalog.rows("resnet*", variants=False)] == [f"resnet{d}" for d in (18, 34, 50, 101, 152)]
    assert kcnn.list_models("vgg1[69]") == [row.name for row in catalog.rows("vgg1[69]")]

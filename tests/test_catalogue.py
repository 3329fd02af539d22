"""The model catalogue: the shipped file is complete and agrees with what Easel can import, its
figures are well formed and documented, and a damaged or newer file is one clear sentence."""

from __future__ import annotations

import copy
import inspect
import json
import re
from pathlib import Path

import pytest

from desktop import catalogue
from desktop.catalogue import CatalogueError, is_installed, load_catalogue, parse_catalogue
from engine.export import checkpoint_family
from engine.export.source import DISTILLATIONS, PREDICTION_TYPES

SHIPPED = json.loads(catalogue.default_path().read_text(encoding="utf-8"))
DOCS = (catalogue.default_path().parent / "docs" / "catalogue.md").read_text(encoding="utf-8")
WANTED = {"sd15", "sd-turbo", "sdxl-turbo", "sdxl", "sd21", "sd15-inpainting",
          "instruct-pix2pix", "realesrgan-x4plus", "realesrgan-x2plus"}


@pytest.fixture(scope="module")
def shipped() -> catalogue.Catalogue:
    return load_catalogue()


def test_shipped_catalogue_validates_and_has_the_issue_entries(shipped):
    assert shipped.format == catalogue.FORMAT
    assert {entry.id for entry in shipped.entries} == WANTED


def test_every_entry_has_source_files_licence_kind_use_and_disk(shipped):
    for entry in shipped.entries:
        assert entry.repo or entry.release, entry.id
        assert entry.files and all(file.url.startswith("https://") for file in entry.files)
        assert entry.licence and entry.licence_url.startswith("https://")
        assert entry.kind in catalogue.KINDS and entry.task in catalogue.TASKS[entry.kind]
        assert entry.use.endswith(".") and "\n" not in entry.use
        assert entry.disk_during_import > entry.disk_after_import > 0
        # The import needs at least the download itself on disk.
        assert entry.disk_during_import >= entry.download_size


def test_hub_files_are_fetched_from_the_pinned_revision(shipped):
    sd15 = shipped.entry("sd15")
    assert sd15.files[0].url == (
        "https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/resolve/"
        "451f4fe16113bff5a5d2269ed5ad43b0592e9a14/v1-5-pruned-emaonly.safetensors")


def test_hashes_are_64_hex_or_null_and_null_only_where_the_docs_say_why(shipped):
    for entry in shipped.entries:
        for file in entry.files:
            if file.sha256 is not None:
                assert re.fullmatch(r"[0-9a-f]{64}", file.sha256)
                assert file.sha256 in DOCS, f"{entry.id}: no source for the hash of {file.path}"
            else:
                # The docs name the entry's hash-less files and the check that replaces them.
                assert entry.repo is not None, entry.id
                assert f"`{entry.id}`" in DOCS and "ETag" in DOCS


def test_exact_sizes_are_documented(shipped):
    for entry in shipped.entries:
        for file in entry.files:
            if file.size is not None:
                assert f"{file.size:,}" in DOCS, f"{entry.id}: no source for {file.path}'s size"


def test_revisions_are_commits_or_documented_as_unpinned(shipped):
    for entry in shipped.entries:
        if entry.repo is None:
            continue
        if entry.pinned:
            assert re.fullmatch(r"[0-9a-f]{40}", entry.revision)
            assert entry.revision in DOCS, f"{entry.id}: no source for its revision"
        else:
            assert entry.revision == catalogue.UNPINNED
            assert re.search(rf"`{re.escape(entry.id)}`.*not pinned", DOCS), entry.id


def test_non_commercial_licences_are_flagged_and_explained(shipped):
    flagged = {entry.id for entry in shipped.non_commercial()}
    assert flagged == {"sd-turbo", "sdxl-turbo"}
    for entry in shipped.non_commercial():
        assert "commercial" in entry.licence_note.lower()


def test_import_options_are_ones_the_model_store_accepts(shipped):
    from desktop.model_store import ModelStore

    keywords = inspect.signature(ModelStore.import_model).parameters
    assert set(catalogue.FAMILIES) == set(checkpoint_family.FAMILIES)
    assert set(catalogue.PREDICTIONS) == set(PREDICTION_TYPES)
    assert set(catalogue.DISTILLATIONS) == set(DISTILLATIONS)
    for entry in shipped.entries:
        options = entry.import_options()
        assert set(options) <= set(keywords), entry.id
        if entry.kind == "diffusion":
            assert options["family"] in checkpoint_family.FAMILIES


def test_single_file_entries_are_ones_the_checkpoint_converter_supports(shipped):
    """The single-file converter takes 4-channel (text-to-image) and 9-channel (inpainting)
    UNets; InstructPix2Pix's 8-channel UNet must come as a diffusers folder."""
    convertible = {"text-to-image": checkpoint_family.TEXT_TO_IMAGE_CHANNELS,
                   "inpainting": checkpoint_family.INPAINTING_CHANNELS}
    for entry in shipped.entries:
        if entry.kind != "diffusion":
            assert entry.file_format == "pickle" and entry.files[0].path.endswith(".pth")
            continue
        if entry.file_format == "diffusers-folder":
            paths = {file.path for file in entry.files}
            for needed in ("model_index.json", "unet/config.json", "vae/config.json",
                           "text_encoder/config.json", "scheduler/scheduler_config.json",
                           "tokenizer/vocab.json", "tokenizer/merges.txt"):
                assert needed in paths, f"{entry.id} lacks {needed}"
            # Only safetensors weights: the folder importer refuses pickle-only components.
            assert not any(path.endswith((".bin", ".ckpt")) for path in paths)
        else:
            assert entry.task in convertible, entry.id
            assert len(entry.files) == 1
        # SD 2.x files cannot tell their prediction type, so the entry must.
        if entry.family == "sd2":
            assert entry.prediction in PREDICTION_TYPES


def test_turbo_entries_say_so(shipped):
    assert shipped.entry("sd-turbo").distillation == "turbo"
    assert shipped.entry("sdxl-turbo").distillation == "turbo"
    assert shipped.entry("sd21").prediction == "v_prediction"


def test_unknown_entry_is_one_sentence_naming_the_known_ones(shipped):
    with pytest.raises(CatalogueError) as raised:
        shipped.entry("sd99")
    message = str(raised.value)
    assert message.startswith("The catalogue has no entry 'sd99' (known: sd15, ")
    assert message.endswith(").") and ". " not in message


def test_is_installed_goes_by_the_install_name(shipped):
    sdxl = shipped.entry("sdxl")
    assert is_installed(sdxl, {"sd15", "sdxl-base"})
    assert not is_installed(sdxl, {"sdxl"})


def test_sizes_add_up(shipped):
    x4 = shipped.entry("realesrgan-x4plus")
    assert shipped.total_download_size(["realesrgan-x4plus", "realesrgan-x2plus"]) == \
        67_040_989 + 67_061_725
    assert x4.needed_disk == x4.disk_during_import
    assert shipped.total_download_size() == sum(e.download_size for e in shipped.entries)
    pix2pix = shipped.entry("instruct-pix2pix")
    assert pix2pix.download_size > 4_000_000_000  # the rounded listings count


def _broken(change) -> dict:
    data = copy.deepcopy(SHIPPED)
    change(data)
    return data


@pytest.mark.parametrize(("change", "sentence"), [
    (lambda d: d["entries"][0]["files"][0].update(sha256="ABC"),
     "entry 'sd15' has no valid 'sha256'"),
    (lambda d: d["entries"][0]["source"].update(revision="451f4fe"),
     "entry 'sd15' has no valid 'revision'"),
    (lambda d: d["entries"][1].pop("licence"), "entry 'sd-turbo' has no valid 'licence'"),
    (lambda d: d["entries"][2]["import"].update(family="sd3"),
     "entry 'sdxl-turbo' has no valid 'family'"),
    (lambda d: d["entries"][3].update(kind="lora"), "entry 'sdxl' has no valid 'kind'"),
    (lambda d: d["entries"][4]["disk"].update(after_import=-1),
     "entry 'sd21' has no valid 'after_import'"),
    (lambda d: d["entries"][5]["files"][0].update(path="../../etc/passwd"),
     "entry 'sd15-inpainting' has no valid 'path'"),
    (lambda d: d["entries"][7]["files"][0].update(sha256=None),
     "entry 'realesrgan-x4plus' has no valid 'sha256'"),
    (lambda d: d["entries"][0].update(install_as="../sd15"),
     "entry 'sd15' has no valid 'install_as'"),
    (lambda d: d["entries"][1].update(id="sd15"), "entry 'sd15' repeats the 'id'"),
    (lambda d: d["entries"].__setitem__(0, "sd15"), "entry 1 is not a JSON object"),
])
def test_malformed_catalogue_is_one_sentence_naming_entry_and_field(change, sentence):
    with pytest.raises(CatalogueError) as raised:
        parse_catalogue(_broken(change))
    message = str(raised.value)
    assert sentence in message
    assert message.startswith("The model catalogue is damaged: ") and message.endswith(".")
    assert "\n" not in message


def test_newer_format_is_made_for_a_newer_easel(tmp_path: Path):
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps(_broken(lambda d: d.update(format=catalogue.FORMAT + 1))))
    with pytest.raises(CatalogueError, match="made for a newer Easel"):
        load_catalogue(path)


@pytest.mark.parametrize(("text", "sentence"), [
    ("{not json", "is not valid JSON"),
    ('{"format": 1, "entries": []}', "has no list of 'entries'"),
    ('{"format": "one", "entries": []}', "its 'format' is not a number"),
    ("[]", "it is not a JSON object"),
])
def test_unreadable_files_are_one_sentence(tmp_path: Path, text: str, sentence: str):
    path = tmp_path / "catalogue.json"
    path.write_text(text)
    with pytest.raises(CatalogueError, match=re.escape(sentence)):
        load_catalogue(path)
    with pytest.raises(CatalogueError, match="cannot be read"):
        load_catalogue(tmp_path / "missing.json")


def test_shipped_in_the_wheel_as_package_data():
    """pyproject ships every package's *.json; the catalogue sits at the top of
    easel_resources, so it is one of them."""
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"*" = ["*.json"]' in pyproject
    assert catalogue.default_path().parent.name in ("resources", "easel_resources")

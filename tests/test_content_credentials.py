"""Content Credentials (C2PA) on every picture the library makes, checked by c2pa-python's own
Reader (an independent validator, not Easel's summary of it): new pictures say "created" by a
trained model, edits say "opened" + "edited" with the source as a parent ingredient whose
manifest is kept, a changed pixel is found, the prompt stays out unless allowed, and the
signing key is private, made once, and replaced (old pictures still verifying) when damaged."""

from __future__ import annotations

import io
import json
import os
import stat
import struct
import threading
import zlib
from dataclasses import replace
from pathlib import Path

import c2pa
import numpy as np
import pytest
from PIL import Image

from desktop.library import Library
from desktop.library.pngs import read_png
from desktop.provenance import keys, xmp
from desktop.provenance.policy import ProvenanceSettings
from desktop.provenance.reading import NONE, TAMPERED, UNREADABLE, VALID, read_credentials
from desktop.provenance.signing import COMPOSITE, GENERATION_LABEL, TRAINED
from tests.test_library import PARAMETERS, pixels

REMOVE_BACKGROUND = "remove_background"


@pytest.fixture
def library(tmp_path):
    with Library.open(tmp_path / "home") as opened:
        yield opened


def _independent(path: Path) -> tuple[str, dict, dict]:
    """c2pa-python's verdict: (validation state, the whole store, the active manifest)."""
    with path.open("rb") as stream:
        reader = c2pa.Reader("image/png", stream)
        store = json.loads(reader.json())
        return reader.get_validation_state(), store, reader.get_active_manifest()


def _actions(manifest: dict) -> list[dict]:
    [actions] = [assertion["data"]["actions"] for assertion in manifest["assertions"]
                 if assertion["label"] == "c2pa.actions.v2"]
    return actions


def _generation(manifest: dict) -> dict:
    [data] = [assertion["data"] for assertion in manifest["assertions"]
              if assertion["label"] == GENERATION_LABEL]
    return data


def _failures(store: dict) -> list[str]:
    """Failure codes, less the self-made certificate's being unknown to any authority."""
    return [entry["code"] for entry in store["validation_results"]["activeManifest"]["failure"]
            if entry["code"] != "signingCredential.untrusted"]


def test_a_new_picture_says_created_by_a_trained_model(library):
    entry = library.add_generated(pixels(1), PARAMETERS)
    state, store, manifest = _independent(entry.path)
    assert state == "Valid" and _failures(store) == []
    [action] = _actions(manifest)
    assert action["action"] == "c2pa.created"
    assert action["digitalSourceType"] == TRAINED
    assert action["softwareAgent"]["name"] == "Easel"
    assert manifest["claim_generator_info"][0]["name"] == "Easel"
    generation = _generation(manifest)
    assert generation["model"] == {"name": "tiny", "hash": "0123"}
    assert "prompt" not in generation  # private unless the user allows it
    assert PARAMETERS.prompt not in json.dumps(store)
    assert manifest["signature_info"]["issuer"] == keys.ORGANISATION
    # Easel's summary says the same.
    summary = read_credentials(entry.path)
    assert summary.state == VALID and summary.actions == ("c2pa.created",)
    assert summary.ours(library.provenance.serial_number())


def test_the_png_stays_readable_by_other_tools_and_names_its_source_in_xmp(library):
    entry = library.add_generated(pixels(2), PARAMETERS)
    with Image.open(entry.path) as image:
        assert np.array_equal(np.asarray(image), pixels(2))
        assert image.text["parameters"].startswith(PARAMETERS.prompt)  # A1111's chunk
        assert xmp.digital_source_type(image.info[xmp.KEY]) == TRAINED
    assert read_png(entry.path).prompt == PARAMETERS.prompt  # the library's own reading


def test_an_edit_of_an_edit_keeps_the_chain_of_manifests(library):
    first = library.add_generated(pixels(3), PARAMETERS)
    second = library.add_generated(pixels(4), replace(PARAMETERS, operation="image_to_image"),
                                   source_id=first.id)
    third = library.add_generated(pixels(5), replace(PARAMETERS, operation="inpaint"),
                                  source_id=second.id)
    state, store, manifest = _independent(third.path)
    assert state == "Valid" and _failures(store) == []
    assert [action["action"] for action in _actions(manifest)] == ["c2pa.opened",
                                                                    "c2pa.edited"]
    assert _actions(manifest)[1]["digitalSourceType"] == COMPOSITE
    [parent] = manifest["ingredients"]
    assert parent["relationship"] == "parentOf"
    # The parent's own manifest is the second picture's, which holds the first's.
    assert parent["active_manifest"] == _independent(second.path)[1]["active_manifest"]
    assert len(store["manifests"]) == 3
    grandparent = store["manifests"][parent["active_manifest"]]["ingredients"][0]
    assert grandparent["active_manifest"] == _independent(first.path)[1]["active_manifest"]
    with Image.open(third.path) as image:
        assert xmp.digital_source_type(image.info[xmp.KEY]) == COMPOSITE
    assert read_credentials(third.path).parents == (VALID,)


def test_an_edit_of_a_picture_outside_the_library_is_created_from_a_picture(library):
    entry = library.add_generated(pixels(6), replace(PARAMETERS, operation="image_to_image"))
    state, _, manifest = _independent(entry.path)
    assert state == "Valid"
    [action] = _actions(manifest)
    assert (action["action"], action["digitalSourceType"]) == ("c2pa.created", COMPOSITE)


def test_a_cut_out_and_a_mask_are_signed_too(library):
    source = library.add_generated(pixels(7), PARAMETERS)
    rgba = np.dstack([pixels(8), np.full((16, 16), 128, np.uint8)])
    cut_out = library.add_generated(rgba, replace(PARAMETERS, operation=REMOVE_BACKGROUND),
                                    source_id=source.id)
    mask = library.add_generated(pixels(9)[..., 0], replace(PARAMETERS, operation="mask"))
    for entry in (cut_out, mask):
        state, store, _ = _independent(entry.path)
        assert state == "Valid" and _failures(store) == [], entry.operation
    with Image.open(cut_out.path) as image:
        assert np.array_equal(np.asarray(image), rgba)  # signing leaves pixels alone


def _change_one_pixel(path: Path) -> None:
    """Rewrite the PNG with one byte of one pixel changed and every other chunk (the
    manifest's caBX included) kept as it was."""
    data = path.read_bytes()
    chunks, offset = [], 8
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        chunks.append((kind, data[offset + 8:offset + 8 + length]))
        offset += 12 + length
    with Image.open(path) as image:
        values = np.asarray(image).copy()
    values[0, 0, 0] ^= 0x01
    # The rows again, unfiltered (filter byte 0), so the change stays in one pixel.
    rows = values.reshape(values.shape[0], -1)
    pixels_data = b"".join(b"\x00" + row.tobytes() for row in rows)
    rewritten, placed = [], False
    for kind, body in chunks:
        if kind == b"IDAT":
            if not placed:
                rewritten.append((kind, zlib.compress(bytes(pixels_data))))
                placed = True
            continue
        rewritten.append((kind, body))
    out = bytearray(data[:8])
    for kind, body in rewritten:
        out += struct.pack(">I", len(body)) + kind + body
        out += struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    path.write_bytes(bytes(out))


def test_a_picture_changed_after_saving_is_reported_tampered(library):
    entry = library.add_generated(pixels(10), PARAMETERS)
    before = np.asarray(Image.open(entry.path)).copy()
    _change_one_pixel(entry.path)
    after = np.asarray(Image.open(entry.path))
    assert int(np.count_nonzero(before != after)) == 1  # one value of one pixel changed
    state, store, _ = _independent(entry.path)
    assert state == "Invalid" and "assertion.dataHash.mismatch" in _failures(store)
    summary = read_credentials(entry.path)
    assert summary.state == TAMPERED and "assertion.dataHash.mismatch" in summary.failures
    assert "\n" not in summary.sentence


def test_the_prompt_is_included_only_when_allowed(tmp_path):
    allowed = ProvenanceSettings(credentials_prompt=True)
    with Library.open(tmp_path / "home", provenance=allowed) as library:
        entry = library.add_generated(pixels(11), PARAMETERS)
    assert _generation(_independent(entry.path)[2])["prompt"] == PARAMETERS.prompt
    assert read_credentials(entry.path).prompt == PARAMETERS.prompt


def test_credentials_off_writes_none_but_keeps_the_xmp_source_type(tmp_path):
    with Library.open(tmp_path / "home",
                      provenance=ProvenanceSettings(credentials=False)) as library:
        entry = library.add_generated(pixels(12), PARAMETERS)
    assert read_credentials(entry.path).state == NONE
    with pytest.raises(c2pa.C2paError):
        c2pa.Reader("image/png", io.BytesIO(entry.path.read_bytes()))
    with Image.open(entry.path) as image:
        assert xmp.digital_source_type(image.info[xmp.KEY]) == TRAINED
    assert not keys.identity_path(tmp_path / "home").exists()  # no key made for nothing


def test_export_without_metadata_removes_the_credentials(library, tmp_path):
    entry = library.add_generated(pixels(13), PARAMETERS)
    [kept] = library.export([entry.id], tmp_path / "out")
    [stripped] = library.export([entry.id], tmp_path / "out", strip_metadata=True)
    assert read_credentials(kept).state == VALID
    assert read_credentials(stripped).state == NONE


def test_the_key_is_private_and_made_once(library, tmp_path):
    first = library.add_generated(pixels(14), PARAMETERS)
    path = keys.identity_path(library.root)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    second = library.add_generated(pixels(15), PARAMETERS)
    serials = {_independent(entry.path)[2]["signature_info"]["cert_serial_number"]
               for entry in (first, second)}
    assert serials == {str(keys.load_or_create(library.root).serial_number)}


def test_two_easels_starting_at_once_share_one_identity(tmp_path):
    made: list[int] = []
    threads = [threading.Thread(target=lambda: made.append(
        keys.load_or_create(tmp_path).serial_number)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(made)) == 1 and len(made) == 4
    assert [path.name for path in keys.identity_path(tmp_path).parent.iterdir()] == [
        keys.FILE_NAME]  # no temp file left


def test_a_damaged_key_is_replaced_and_old_pictures_still_verify(tmp_path):
    with Library.open(tmp_path / "home") as library:
        old = library.add_generated(pixels(16), PARAMETERS)
    path = keys.identity_path(tmp_path / "home")
    old_serial = keys.load_or_create(tmp_path / "home").serial_number
    path.write_bytes(path.read_bytes()[:200])  # cut short, as a crash or a bad copy leaves it
    with Library.open(tmp_path / "home") as library:
        new = library.add_generated(pixels(17), PARAMETERS)
        [message] = library.provenance.take_notes()
    assert "damaged" in message and "\n" not in message
    aside = [name for name in os.listdir(path.parent) if ".damaged-" in name]
    assert len(aside) == 1 and aside[0] in message  # kept, never deleted
    assert read_credentials(old.path).state == VALID
    assert read_credentials(new.path).state == VALID
    assert read_credentials(new.path).serial_number != old_serial


def test_unreadable_credentials_are_one_sentence(tmp_path):
    entry_path = tmp_path / "odd.png"
    Image.fromarray(pixels(18)).save(entry_path)
    data = bytearray(entry_path.read_bytes())
    # A caBX chunk whose content is not JUMBF, placed before IEND.
    body = b"not a manifest"
    chunk = struct.pack(">I", len(body)) + b"caBX" + body + struct.pack(
        ">I", zlib.crc32(b"caBX" + body) & 0xFFFFFFFF)
    end = data.rfind(b"IEND") - 4
    entry_path.write_bytes(bytes(data[:end]) + chunk + bytes(data[end:]))
    summary = read_credentials(entry_path)
    assert summary.state == UNREADABLE
    assert summary.sentence == ("Content Credentials: present but unreadable (Verify: invalid "
                                "JUMBF header).")
    assert summary.sentence.startswith("Content Credentials:") and "\n" not in summary.sentence
    missing = read_credentials(tmp_path / "gone.png")
    assert missing.state == UNREADABLE and "could not be read" in missing.sentence


def test_the_watermark_is_added_only_when_asked(tmp_path):
    from desktop.provenance.watermark import find_watermark

    scene = np.random.default_rng(19).integers(0, 256, (256, 320, 3), dtype=np.uint8)
    with Library.open(tmp_path / "marked", provenance=ProvenanceSettings(watermark=True)) as on:
        marked = on.add_generated(scene, PARAMETERS)
        small = on.add_generated(pixels(20), PARAMETERS)  # too small to carry it: saved as is
    with Library.open(tmp_path / "plain") as off:
        plain = off.add_generated(scene, PARAMETERS)
    assert find_watermark(np.asarray(Image.open(marked.path)))
    assert not find_watermark(np.asarray(Image.open(plain.path)))
    assert np.array_equal(np.asarray(Image.open(small.path)), pixels(20))
    assert read_credentials(marked.path).state == VALID  # signed after marking


def test_a_picture_that_cannot_be_signed_is_saved_without_and_said(library, monkeypatch):
    import desktop.provenance.policy as policy

    def fail(*_, **__):
        raise MemoryError

    monkeypatch.setattr(policy, "sign_png", fail)
    entry = library.add_generated(pixels(21), PARAMETERS)
    with Image.open(entry.path) as image:  # whole, with its prompt: nothing is lost
        assert np.array_equal(np.asarray(image), pixels(21))
        assert image.text["parameters"].startswith(PARAMETERS.prompt)
    assert read_credentials(entry.path).state == NONE
    [note] = library.provenance.take_notes()
    assert note == (f"'{entry.path.name}' was saved without Content Credentials (too large "
                    "to sign in memory).")
    assert library.provenance.take_notes() == []  # said once

"""Content Credentials through the command line: a generated picture (and its --output copy)
is signed, `easel gallery show` and `easel gallery check` say so, a changed copy is reported as
changed, other PNGs are read too, and `export --strip-metadata` says the credentials went."""

# ruff: noqa: F811 (the fixtures imported below are used as arguments)
from __future__ import annotations

import shutil

import numpy as np
from PIL import Image

from desktop.cli import main
from desktop.provenance.watermark import add_watermark
from tests.test_cli import home, home_with_model, installed  # noqa: F401 (fixtures)
from tests.test_content_credentials import _change_one_pixel


def _made(tmp_path, capsys) -> tuple[str, object]:
    out = tmp_path / "copy.png"
    assert main(["generate", "a lighthouse at dusk", "--model", "tiny", "--width", "64",
                 "--height", "48", "--steps", "2", "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["gallery", "list"]) == 0
    picture_id = capsys.readouterr().out.split()[0]
    return picture_id, out


def test_show_and_check_say_the_credentials_are_valid_and_ours(installed, tmp_path, capsys):
    picture_id, copy = _made(tmp_path, capsys)
    assert main(["gallery", "show", picture_id]) == 0
    shown = capsys.readouterr().out
    assert "Content Credentials: valid" in shown
    assert "Signed by this installation of Easel." in shown
    assert "actions: c2pa.created" in shown and "model: tiny" in shown
    assert "a lighthouse" not in shown.split("Content Credentials")[1]  # no prompt in them

    assert main(["gallery", "check", str(copy)]) == 0  # the --output copy: same bytes
    checked = capsys.readouterr().out
    assert "Content Credentials: valid" in checked
    assert "XMP source type: trainedAlgorithmicMedia" in checked
    assert "invisible watermark: none found" in checked


def test_check_reports_a_changed_copy_and_reads_other_pngs(installed, tmp_path, capsys):
    _, copy = _made(tmp_path, capsys)
    changed = tmp_path / "changed.png"
    shutil.copy(copy, changed)
    _change_one_pixel(changed)
    other = tmp_path / "other.png"
    scene = np.random.default_rng(3).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    Image.fromarray(add_watermark(scene)).save(other)
    assert main(["gallery", "check", str(changed), str(other)]) == 0
    changed_part, other_part = capsys.readouterr().out.split(f"{other}:")
    assert "do NOT match the picture" in changed_part
    assert "assertion.dataHash.mismatch" in changed_part
    assert "Content Credentials: none." in other_part
    assert "invisible watermark: Easel" in other_part

    (tmp_path / "notes.txt").write_text("not a picture")
    assert main(["gallery", "check", str(tmp_path / "notes.txt")]) != 0
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "notes.txt" in error[0]


def test_export_without_metadata_says_the_credentials_went(installed, tmp_path, capsys):
    picture_id, _ = _made(tmp_path, capsys)
    assert main(["gallery", "export", picture_id, "--to", str(tmp_path / "out"),
                 "--strip-metadata"]) == 0
    assert "no Content Credentials" in capsys.readouterr().err
    [exported] = (tmp_path / "out").iterdir()
    assert main(["gallery", "check", str(exported)]) == 0
    assert "Content Credentials: none." in capsys.readouterr().out


def test_a_damaged_key_is_said_once_and_a_new_one_signs(installed, home, tmp_path, capsys):
    from desktop.provenance import keys

    _made(tmp_path, capsys)
    keys.identity_path(home).write_text("garbage")
    arguments = ["generate", "a boat", "--model", "tiny", "--width", "64", "--height", "48",
                 "--steps", "2"]
    assert main(arguments) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "signing key" in line]
    assert len(warnings) == 1 and "was damaged, so a new one was made" in warnings[0]
    assert main(arguments) == 0  # the new key is whole: nothing more to say
    assert "signing key" not in capsys.readouterr().err
    assert main(["gallery", "list"]) == 0
    newest = capsys.readouterr().out.split()[0]
    assert main(["gallery", "show", newest]) == 0
    assert "Content Credentials: valid" in capsys.readouterr().out


def test_importing_a_signed_or_damaged_picture_says_where_its_credentials_stay(
        installed, tmp_path, capsys):
    import io
    import struct
    import zlib

    from desktop.provenance import keys
    from desktop.provenance.signing import Claim, sign_png

    plain = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(plain, format="PNG")
    signed = tmp_path / "signed.png"
    with signed.open("wb") as stream:
        sign_png(plain.getvalue(), Claim("signed.png", "text_to_image"),
                 keys.load_or_create(tmp_path / "elsewhere"), stream)
    # A caBX chunk (CRC right, so the PNG opens) whose content is no manifest.
    body = b"jumb" + bytes(40)
    chunk = (struct.pack(">I", len(body)) + b"caBX" + body
             + struct.pack(">I", zlib.crc32(b"caBX" + body) & 0xFFFFFFFF))
    data = plain.getvalue()
    end = data.rfind(b"IEND") - 4
    damaged = tmp_path / "damaged.png"
    damaged.write_bytes(data[:end] + chunk + data[end:])
    assert main(["gallery", "import", str(signed), str(damaged)]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "note:" in line]
    assert notes[0] == ("easel: note: 'signed.png' carries Content Credentials; they stay in that "
                        "file (the library's copy is re-encoded without them).")
    assert notes[1] == ("easel: note: 'damaged.png' carries Content Credentials that could "
                        "not be read (Verify: unexpected end of file); the library's copy has "
                        "none, and the file stays as it was.")

"""`easel models get`: a catalogue entry (or an address) downloaded from a fake Hub on
127.0.0.1, checked, imported and tidied, as a user runs it; stopped with Ctrl+C and resumed."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fake_hub import FakeHub

torch = pytest.importorskip("torch")
from tests.test_upscale import rrdb_state  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _upscaler_bytes(tmp_path: Path) -> bytes:
    # A real (tiny) Real-ESRGAN checkpoint, with padding so a stall can fall mid-file.
    path = tmp_path / "weights.pth"
    torch.save({"params_ema": rrdb_state(4), "padding": torch.zeros(1024 * 1024)}, path)
    return path.read_bytes()


def _entry(entry_id: str, files: list[dict], source: dict, *, non_commercial=False) -> dict:
    return {
        "id": entry_id, "name": f"Tiny {entry_id}", "install_as": entry_id,
        "kind": "upscaler", "task": "upscale", "use": "Tests the downloads.",
        "source": source, "file_format": "pickle", "files": files,
        "import": {"family": None, "prediction": None, "distillation": None},
        "licence": {"name": "Test Licence", "non_commercial": non_commercial,
                    "url": "https://example.invalid/licence"},
        "gated": False, "disk": {"during_import": 10_000_000, "after_import": 3_000_000},
    }


@pytest.fixture
def world(tmp_path):
    """A fake Hub with one upscaler repo, a catalogue naming it, and a fresh data folder."""
    hub = FakeHub(tmp_path / "served")
    data = _upscaler_bytes(tmp_path)
    commit = hub.add_repo("easel-test/tiny-x4")
    hub.add_file("easel-test/tiny-x4", "tiny_x4.pth", data)
    sha256 = hashlib.sha256(data).hexdigest()
    catalogue = {"format": 1, "entries": [_entry(
        "tiny-x4", [{"path": "tiny_x4.pth", "size": len(data), "sha256": sha256}],
        {"hub": "easel-test/tiny-x4", "revision": commit})]}
    (tmp_path / "catalogue.json").write_text(json.dumps(catalogue))
    env = {**os.environ, "EASEL_HOME": str(tmp_path / "home"), "HF_ENDPOINT": hub.endpoint,
           "HF_HOME": str(tmp_path / "hf"), "EASEL_CATALOGUE": str(tmp_path / "catalogue.json")}
    for variable in ("HF_TOKEN", "HF_HUB_OFFLINE"):
        env.pop(variable, None)
    yield {"hub": hub, "env": env, "data": data, "home": tmp_path / "home", "tmp": tmp_path}
    hub.close()


def _easel(world: dict, *arguments: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "desktop.cli", *arguments], cwd=ROOT,
                            env=world["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **popen)


def _run(world: dict, *arguments: str) -> tuple[int, str, str]:
    process = _easel(world, *arguments)
    out, err = process.communicate(timeout=300)
    return process.returncode, out, err


def test_get_downloads_checks_imports_and_tidies(world):
    code, out, err = _run(world, "models", "get", "tiny-x4")
    assert code == 0, err
    assert "Installed 'tiny-x4'" in out
    assert "Licence: Test Licence" in err  # said before the download started
    assert err.index("Licence") < err.index("tiny_x4.pth:")
    assert world["hub"].ranges("/lfs/") == [(0, len(world["data"]))]
    assert not (world["home"] / "downloads" / "tiny-x4").exists()  # deleted after the import
    code, out, _ = _run(world, "models", "list")
    assert "tiny-x4" in out and "4x upscaler" in out
    code, out, _ = _run(world, "models", "catalogue")
    assert out.startswith("tiny-x4  installed")


def test_keep_download_keeps_the_verified_file(world):
    code, _, err = _run(world, "models", "get", "tiny-x4", "--keep-download")
    assert code == 0, err
    kept = world["home"] / "downloads" / "tiny-x4" / "tiny_x4.pth"
    assert kept.read_bytes() == world["data"]


def test_ctrl_c_keeps_the_part_and_the_same_command_resumes(world):
    hub, half = world["hub"], len(world["data"]) // 2
    hub.stall_at = half
    getting = _easel(world, "models", "get", "tiny-x4")
    deadline = time.monotonic() + 60
    while not hub.stalled.is_set():
        assert getting.poll() is None and time.monotonic() < deadline, getting.communicate()
        time.sleep(0.05)
    asked = time.monotonic()
    getting.send_signal(signal.SIGINT)
    _, err = getting.communicate(timeout=30)
    assert time.monotonic() - asked < 5  # a second for the cancel, the rest is the exit
    assert getting.returncode == 130, err
    assert "the same command resumes it" in err
    partial = world["home"] / "downloads" / "tiny-x4" / "tiny_x4.pth.partial"
    assert partial.stat().st_size == half
    hub.abort()
    hub.reset_switches()

    code, out, err = _run(world, "models", "get", "tiny-x4")
    assert code == 0, err
    assert hub.ranges("/lfs/") == [(0, half), (half, len(world["data"]))]  # nothing twice


def test_a_taken_name_is_refused_before_any_request(world):
    assert _run(world, "models", "get", "tiny-x4")[0] == 0
    requests = len(world["hub"].requests)
    code, _, err = _run(world, "models", "get", "tiny-x4")
    assert code == 1
    assert "A model named 'tiny-x4' is already installed" in err
    assert len(world["hub"].requests) == requests


def test_unknown_entries_and_bad_addresses_are_one_sentence(world):
    code, _, err = _run(world, "models", "get", "sd99")
    assert code == 1 and "The catalogue has no entry 'sd99' (known: tiny-x4)." in err
    code, _, err = _run(world, "models", "get", "ftp://example.invalid/x.pth", "--sha256",
                        "0" * 64)
    assert code == 1 and "is not a web address" in err
    code, _, err = _run(world, "models", "get", world["hub"].storage + "/files/x.pth")
    assert code == 1 and "needs the file's SHA-256" in err
    assert world["hub"].requests == []
    assert "Traceback" not in err


def test_get_from_an_address_checks_the_hash_the_user_gave(world):
    hub, data = world["hub"], world["data"]
    url = hub.add_plain("sharp_x4.pth", data)
    wrong = hashlib.sha256(b"something else").hexdigest()
    code, _, err = _run(world, "models", "get", url, "--sha256", wrong)
    assert code == 1 and "arrived damaged and was deleted" in err
    assert not list((world["home"] / "models").glob("sharp*"))
    code, out, err = _run(world, "models", "get", url, "--sha256",
                          hashlib.sha256(data).hexdigest(), "--name", "sharp")
    assert code == 0, err
    assert "Installed 'sharp'" in out

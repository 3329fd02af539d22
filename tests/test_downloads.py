"""Downloads (desktop.downloads) against a fake Hub and file host on 127.0.0.1 (tests/fake_hub.py):
whole files, resume after a kill -9, a dropped connection or a cancel, checksums, refusals
(404, 401, gated, offline, no server, no space). Nothing here leaves the machine."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import namedtuple
from pathlib import Path

import huggingface_hub.constants
import pytest

from desktop.downloads import (
    DownloadCancelled,
    DownloadError,
    FileToFetch,
    download_files,
    fetch,
    partial_path,
)
from tests.fake_hub import FakeHub

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_testtoken"

# A download in its own process, for kill -9 and for the environment huggingface_hub reads at
# import (HF_ENDPOINT, HF_HUB_OFFLINE).
DOWNLOAD = """
import sys
from pathlib import Path
from desktop.downloads import DownloadError, FileToFetch, download_files
repo_id, filename, folder = sys.argv[1:4]
try:
    download_files([FileToFetch(filename, repo_id=repo_id, filename=filename)], Path(folder))
except DownloadError as error:
    print(error)
    sys.exit(3)
"""


def _bytes(size: int, seed: int = 0) -> bytes:
    return hashlib.shake_256(seed.to_bytes(4, "little")).digest(size)


@pytest.fixture(autouse=True)
def no_login(monkeypatch, tmp_path):
    """No token from this machine's `hf auth login` or environment, and online as a user who
    asked for a download is (other test modules set HF_HUB_OFFLINE for the whole session,
    which huggingface_hub reads once, when first imported)."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def hub(tmp_path):
    fake = FakeHub(tmp_path / "served")  # what it serves; downloads go under tmp_path / "dl"
    yield fake
    fake.close()


def _subprocess(hub: FakeHub, tmp_path: Path, *args: str, **env: str) -> subprocess.Popen:
    # Only what the test names: other test modules set HF_HUB_OFFLINE for the whole session.
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("HF_TOKEN", "HF_HUB_OFFLINE")}
    environment.update(HF_ENDPOINT=hub.endpoint, HF_HOME=str(tmp_path / "hf"), **env)
    return subprocess.Popen([sys.executable, "-c", DOWNLOAD, *args], cwd=ROOT, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(condition, seconds: float = 20.0) -> None:
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def _files(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()]


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def test_whole_download_from_a_private_repo_sends_the_login_only_to_the_hub(
        hub, tmp_path, monkeypatch):
    weights, config = _bytes(3 * MiB + 5), b'{"sample_size": 64}\n'
    hub.add_repo("easel/tiny", private=True, granted=(TOKEN,))
    hub.add_file("easel/tiny", "unet/model.onnx", weights)
    hub.add_file("easel/tiny", "model_index.json", config, lfs=False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    files = [FileToFetch("unet/model.onnx", repo_id="easel/tiny", filename="unet/model.onnx",
                         size=len(weights), sha256=hashlib.sha256(weights).hexdigest()),
             FileToFetch("model_index.json", repo_id="easel/tiny", filename="model_index.json")]
    seen = []
    paths = download_files(files, tmp_path / "model", seen.append, endpoint=hub.endpoint)

    assert [path.read_bytes() for path in paths] == [weights, config]
    assert not list((tmp_path / "model").rglob("*.partial"))
    assert hub.ranges("/lfs/") == [(0, len(weights))]
    assert {served.authorization for served in hub.served if served.server == "storage"} == {None}
    assert any(served.authorization == f"Bearer {TOKEN}" for served in hub.served
               if served.server == "hub")
    done = [p for p in seen if p.file_name == "model.onnx"][-1]
    assert (done.bytes_done, done.total) == (len(weights), len(weights))

    requests = len(hub.requests)
    download_files(files[:1], tmp_path / "model", endpoint=hub.endpoint)  # complete: skipped
    assert len(hub.requests) == requests


def test_kill_9_halfway_then_resume_fetches_only_the_rest(hub, tmp_path):
    data = _bytes(4 * MiB, seed=1)
    hub.add_repo("easel/big")
    hub.add_file("easel/big", "weights.bin", data)
    folder, half = tmp_path / "model", 2 * MiB + 17
    partial = partial_path(folder / "weights.bin")
    hub.stall_at = half
    child = _subprocess(hub, tmp_path, "easel/big", "weights.bin", str(folder))
    # The child starts Python and huggingface_hub first: give a loaded CI machine time.
    _wait_for(lambda: hub.stalled.is_set() and _size(partial) == half, seconds=90)
    child.send_signal(signal.SIGKILL)
    child.wait()
    hub.abort()
    hub.reset_switches()

    # The child found the fake Hub through HF_ENDPOINT alone; this process resumes its partial.
    download_files([FileToFetch("weights.bin", repo_id="easel/big", filename="weights.bin")],
                   folder, endpoint=hub.endpoint)
    assert (folder / "weights.bin").read_bytes() == data
    assert hub.ranges("/lfs/") == [(0, half), (half, len(data))]


def test_a_dropped_connection_resumes_where_it_broke(hub, tmp_path):
    data = _bytes(3 * MiB, seed=2)
    url = hub.add_plain("model.safetensors", data)
    hub.drop_at = MiB + 123
    path = fetch(url, tmp_path / "model.safetensors", expected_size=len(data),
                 expected_sha256=hashlib.sha256(data).hexdigest())
    assert path.read_bytes() == data
    assert hub.ranges() == [(0, MiB + 123), (MiB + 123, len(data))]


def test_a_corrupted_byte_is_refused_and_the_file_deleted(hub, tmp_path):
    data = _bytes(2 * MiB, seed=3)
    expected = hashlib.sha256(data).hexdigest()
    url = hub.add_plain("model.safetensors", data)
    hub.corrupt_at = MiB
    destination = tmp_path / "model.safetensors"
    with pytest.raises(DownloadError) as caught:
        fetch(url, destination, expected_size=len(data), expected_sha256=expected)
    bad = bytearray(data)
    bad[MiB] ^= 0xFF
    assert str(caught.value) == (
        f"model.safetensors arrived damaged and was deleted: its SHA-256 is "
        f"{hashlib.sha256(bad).hexdigest()}, not the expected {expected}.")
    assert not destination.exists() and not partial_path(destination).exists()


def test_cancel_stops_within_a_second_mid_stall_and_the_partial_resumes(hub, tmp_path):
    data = _bytes(4 * MiB, seed=4)
    sha256 = hashlib.sha256(data).hexdigest()
    url = hub.add_plain("model.safetensors", data)
    destination, half = tmp_path / "model.safetensors", 2 * MiB + 1
    hub.stall_at = half
    stop, outcome = threading.Event(), []

    def run() -> None:
        try:
            fetch(url, destination, expected_size=len(data), expected_sha256=sha256,
                  should_stop=stop.is_set)
        except Exception as error:
            outcome.append((error, time.monotonic()))

    thread = threading.Thread(target=run)
    thread.start()
    _wait_for(lambda: hub.stalled.is_set() and _size(partial_path(destination)) == half)
    asked = time.monotonic()
    stop.set()
    thread.join(5)
    error, stopped = outcome[0]
    assert isinstance(error, DownloadCancelled) and stopped - asked < 1.0
    assert "resumes from there" in str(error)
    assert _size(partial_path(destination)) == half
    hub.abort()
    hub.reset_switches()

    fetch(url, destination, expected_size=len(data), expected_sha256=sha256)
    assert destination.read_bytes() == data
    assert hub.ranges() == [(0, half), (half, len(data))]


def test_missing_files_are_one_sentence(hub, tmp_path):
    hub.add_repo("easel/tiny")
    with pytest.raises(DownloadError, match=r"^easel/tiny has no file 'vae.onnx' at revision "
                                            r"'main'\.$"):
        download_files([FileToFetch("vae.onnx", repo_id="easel/tiny", filename="vae.onnx")],
                       tmp_path / "dl", endpoint=hub.endpoint)
    with pytest.raises(DownloadError, match=r"\(HTTP 404\): the address is wrong"):
        fetch(f"{hub.storage}/files/gone.bin", tmp_path / "dl" / "gone.bin")
    assert not _files(tmp_path / "dl")


def test_a_refused_login_is_one_sentence(hub, tmp_path):
    hub.add_repo("easel/private", private=True, granted=(TOKEN,))
    hub.add_file("easel/private", "a.bin", b"x")
    with pytest.raises(DownloadError, match=r"^easel/private was not found on 127\.0\.0\.1: "
                                            r"check the name, or log in with `hf auth login`"):
        download_files([FileToFetch("a.bin", repo_id="easel/private", filename="a.bin")],
                       tmp_path / "dl", endpoint=hub.endpoint)
    url = hub.add_plain("expired.bin", b"x")
    hub.denied.add("/files/expired.bin")
    with pytest.raises(DownloadError, match=r"^127\.0\.0\.1 refused access to expired\.bin "
                                            r"\(HTTP 401\)"):
        fetch(url, tmp_path / "dl" / "expired.bin")
    assert not _files(tmp_path / "dl")


def test_a_gated_repo_says_what_to_do(hub, tmp_path, monkeypatch):
    hub.add_repo("stabilityai/x", gated=True, granted=("hf_granted",))
    hub.add_file("stabilityai/x", "a.bin", b"x")
    hub.tokens.add(TOKEN)
    files = [FileToFetch("a.bin", repo_id="stabilityai/x", filename="a.bin")]
    with pytest.raises(DownloadError) as caught:
        download_files(files, tmp_path / "dl", endpoint=hub.endpoint)
    assert str(caught.value) == ("stabilityai/x is gated: accept its licence on 127.0.0.1 and "
                                 "log in with `hf auth login`, then try again.")
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # logged in, but not granted access yet
    with pytest.raises(DownloadError, match="is gated and your account has no access yet"):
        download_files(files, tmp_path / "dl", endpoint=hub.endpoint)
    assert not _files(tmp_path / "dl") and not hub.ranges()


def test_hf_hub_offline_refuses_without_a_connection(hub, tmp_path):
    hub.add_repo("easel/tiny")
    hub.add_file("easel/tiny", "a.bin", b"x")
    child = _subprocess(hub, tmp_path, "easel/tiny", "a.bin", str(tmp_path / "m"),
                        HF_HUB_OFFLINE="1")
    output, _ = child.communicate(timeout=60)
    assert child.returncode == 3, output
    assert output.strip() == ("HF_HUB_OFFLINE is set, so Easel does not download easel/tiny "
                              "from Hugging Face; unset it to download.")
    assert hub.requests == [] and not (tmp_path / "m").exists()


def test_no_server_is_one_sentence(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(DownloadError, match=r"^Cannot reach 127\.0\.0\.1 to fetch a\.bin of "
                                            r"easel/tiny: check the network connection"):
        download_files([FileToFetch("a.bin", repo_id="easel/tiny", filename="a.bin")],
                       tmp_path / "dl", endpoint=closed)
    with pytest.raises(DownloadError, match=r"^Cannot reach 127\.0\.0\.1 to fetch b\.bin"):
        fetch(f"{closed}/b.bin", tmp_path / "dl" / "b.bin")
    assert not _files(tmp_path / "dl")


def test_too_little_space_is_refused_before_any_request(hub, tmp_path, monkeypatch):
    data = _bytes(MiB, seed=5)
    url = hub.add_plain("model.safetensors", data)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1_500_000,
                                                                  1_500_000))
    files = [FileToFetch("model.safetensors", url=url, size=len(data),
                         sha256=hashlib.sha256(data).hexdigest())]
    with pytest.raises(DownloadError) as caught:
        download_files(files, tmp_path / "model", extra_bytes=2_000_000,
                       what="the download of Tiny SD")
    assert str(caught.value) == ("There is not enough free space for the download of Tiny SD: "
                                 f"it needs 3.0 MB and {tmp_path} has 1.5 MB free.")
    assert hub.requests == [] and not (tmp_path / "model").exists()


def test_a_paced_server_is_as_slow_as_its_link(hub, tmp_path):
    # The benchmark's "real link" (tests/benchmarks/download_speed.py) must really be paced.
    data = _bytes(MiB, seed=9)
    url = hub.add_plain("paced.bin", data)
    hub.rate = 4 * MiB
    started = time.monotonic()
    fetch(url, tmp_path / "paced.bin", expected_sha256=hashlib.sha256(data).hexdigest())
    assert time.monotonic() - started >= 0.2  # 1 MiB at 4 MiB/s: a quarter of a second
    assert (tmp_path / "paced.bin").read_bytes() == data

"""Easel's offline promise: nothing connects to the network unless the user asks for a download.

Generation, every edit the command line offers, a model import, and the window's start and
first picture each run as the real program in a child process, in two layers
(tests/offline_guard.py):

- python-sockets: Python's sockets refuse every internet connection and name lookup and write
  the attempt down; the case shows the command worked and that nothing was attempted.
- no-network-namespace: the same child inside a network namespace with no interfaces
  (``unshare -rn``), where native code (c2pa-python's Rust library, ONNX Runtime) cannot
  connect either; the case shows the command still worked and its pictures are signed, so
  nothing it needs comes from the network. Where strace runs, this layer is also traced system
  call by system call, and no connect(), sendto() or sendmsg() naming an IPv4/IPv6 address may
  appear: not even native code tried. Skipped, with the reason, where the machine refuses such
  a namespace; test_the_trace_sees_an_internet_connection says when strace cannot run.

The only code allowed to connect is the download manager, when the user asks it to
(tests/test_downloads.py, tests/test_model_get.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from desktop.provenance.reading import VALID, read_credentials
from tests import tiny_models, tiny_models_pix2pix
from tests.offline_guard import (
    GUARD,
    NATIVE_SETTLE_S,
    NO_NETWORK,
    PYTHON_SOCKETS,
    WINDOW_FIRST_PICTURE,
    WINDOW_REPORT_ENV,
    Layer,
    Offline,
    namespace_refusal,
    offline_in,
    strace_refusal,
)

SOURCE_PROMPT = "a red ball on the left, on a blue background"  # words the starter model knows
WINDOW_PROMPT = "a yellow banana in the middle, on a green background"


@pytest.fixture(params=[PYTHON_SOCKETS, NO_NETWORK], ids=lambda layer: layer.name)
def layer(request) -> Layer:
    if request.param is NO_NETWORK and (reason := namespace_refusal()):
        pytest.skip(f"The no-network layer cannot run here: {reason}.")
    return request.param


@pytest.fixture
def offline(tmp_path, layer) -> Offline:
    """A fresh data folder, cut off by ``layer``."""
    return offline_in(tmp_path, layer)


def succeeded(made: subprocess.CompletedProcess) -> list[Path]:
    """The pictures a command printed, once it is known to have worked."""
    assert made.returncode == 0, made.stderr + made.stdout
    return [Path(line) for line in made.stdout.split()]


def signed_library_picture(path: Path, home: Path) -> dict:
    """``path`` is a picture in the library at ``home`` with valid Content Credentials (made
    and signed with no network); its Easel metadata."""
    assert path.is_file() and path.is_relative_to(home / "images"), path
    credentials = read_credentials(path)
    assert credentials.state == VALID, credentials.sentence
    with Image.open(path) as image:
        return json.loads(image.text["easel"])


# --- the guards themselves: without them the cases below would prove nothing ------------------

def test_the_guard_records_and_refuses_a_connection(tmp_path):
    offline = offline_in(tmp_path, PYTHON_SOCKETS)
    probe = offline.run(GUARD + "import urllib.request\ntry:\n"
                        "    urllib.request.urlopen('http://93.184.215.14/', timeout=5)\n"
                        "except OSError:\n    pass\n")
    assert probe.returncode == 0, probe.stderr
    assert "93.184.215.14" in offline.attempted()


def test_the_namespace_has_no_network(tmp_path):
    if reason := namespace_refusal():
        pytest.skip(f"The no-network layer cannot run here: {reason}.")
    # Plain sockets, no guard: in the namespace even an address needing no lookup fails.
    probe = subprocess.run(
        [*NO_NETWORK.prefix, sys.executable, "-c",
         "import socket\ntry:\n    socket.create_connection(('1.1.1.1', 53), timeout=5)\n"
         "except OSError as error:\n    print(error.errno)\nelse:\n    print('connected')"],
        capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() not in ("", "connected")


def test_the_trace_sees_an_internet_connection(tmp_path):
    if reason := strace_refusal():
        pytest.skip(f"The system-call trace cannot run here, so the no-network layer runs "
                    f"untraced: {reason}.")
    # A connect from code the Python guard cannot see (libc's, through ctypes), in the
    # namespace where it fails, and a local one that is not counted.
    native = ("import ctypes, socket, struct\nlibc = ctypes.CDLL(None)\n"
              "fd = libc.socket(socket.AF_INET, socket.SOCK_STREAM, 0)\n"
              "address = struct.pack('=H', socket.AF_INET) + struct.pack('!H4s8x', 9, "
              "bytes([192, 0, 2, 7]))\nlibc.connect(fd, address, len(address))\n"
              "local = socket.socket(socket.AF_UNIX)\ntry:\n"
              "    local.connect('/nonexistent')\nexcept OSError:\n    pass\n")
    layer = NO_NETWORK if namespace_refusal() is None else Layer("traced", traced=True)
    offline = offline_in(tmp_path, layer)
    probe = offline.run(GUARD + native)
    assert probe.returncode == 0, probe.stderr
    (call,) = offline.attempted().splitlines()  # the guard saw nothing; the trace saw this
    assert "192.0.2.7" in call


# --- generation and a model import --------------------------------------------------------------

def test_generating_a_picture_connects_to_nothing(offline):
    (made,) = succeeded(offline.easel("generate", "a red apple on a table", "--count", "1"))
    assert signed_library_picture(made, offline.home)["operation"] == "text_to_image"
    assert offline.attempted() == ""


@pytest.mark.slow
def test_importing_a_model_and_generating_with_it_connects_to_nothing(offline, tmp_path):
    source = tmp_path / "tiny-source"
    shutil.copytree(tiny_models.tiny_diffusers("sd1"), source)
    succeeded(offline.easel("models", "import", str(source), "--name", "tiny"))
    assert "tiny" in offline.easel("models", "list").stdout
    # The imported model's own graphs (text encoder, UNet, VAE) then make a signed picture.
    (made,) = succeeded(offline.easel("generate", "a red apple", "--model", "tiny",
                                      "--width", "64", "--height", "64", "--steps", "2"))
    metadata = signed_library_picture(made, offline.home)
    assert metadata["model"]["name"] == "tiny"
    assert offline.attempted() == ""


# --- every edit, in one data folder shared by the cases ------------------------------------------

@pytest.fixture(scope="module")
def studio(tmp_path_factory) -> dict:
    """A data folder holding a starter-model picture (made offline) and a mask for it; the
    tiny models some edits need are installed into it by ``installed`` when first asked."""
    folder = tmp_path_factory.mktemp("studio")
    maker = offline_in(folder, PYTHON_SOCKETS)
    (source,) = succeeded(maker.easel("generate", SOURCE_PROMPT, "--seed", "3", "--width",
                                      "128", "--height", "128"))
    assert maker.attempted() == ""
    mask = np.zeros((128, 128), np.uint8)
    mask[:, 64:] = 255
    Image.fromarray(mask).save(folder / "mask.png")
    return {"folder": folder, "source": str(source), "mask": str(folder / "mask.png"),
            "installed": {}}


def installed(studio: dict, model: str) -> str:
    """The name of a tiny ``model`` in the studio's data folder, put there as the model store
    would (their imports have tests of their own; the import case above runs one offline)."""
    names = studio["installed"]
    if model not in names:
        names[model] = _install(studio["folder"] / "home" / "models", model)
    return names[model]


def _install(models: Path, model: str) -> str:
    if model == "pix2pix":  # the cached tiny InstructPix2Pix export (tests/test_cli_regions.py)
        from tests.tiny_models_xl import installed_copy

        installed_copy(tiny_models_pix2pix.tiny_pix2pix_onnx(), models / "pix2pix")
        return "pix2pix"
    if model == "upscaler":  # skips without spandrel, as tests/test_upscale.py does
        from tests.test_upscale import export_tiny

        export_tiny(models / "tiny_x4")
        return "tiny_x4"
    if model == "face restorer":
        from tests.test_faces import inverting_restorer

        inverting_restorer(models / "restorer")
        return "restorer"
    assert model == "segmenter"
    from desktop.model_store import ModelStore
    from tests.test_background import TinySegmenter, export

    graph = export(TinySegmenter(7, offset=0.2), models.parent.parent / "u2net.onnx", 320)
    return ModelStore(models).import_model(graph, kind="segmenter").name


# The built-in starter model, named: once the tiny InstructPix2Pix is installed beside it, a
# command left to choose would not take the starter.
STARTER = ("--model", "starter")

# The command, its words ({source}, {mask} and {<model>} filled in), the operation its picture
# records, and the tiny model it needs. Instruct uses the cached 8-channel tiny InstructPix2Pix
# that tests/test_cli_regions.py also builds, so it adds no model build of its own.
EDITS = {
    "edit": (["edit", "{source}", "a blue ball on the left, on a red background",
              "--strength", "0.7", "--seed", "2", *STARTER], "image_to_image", None),
    "variations": (["variations", "{source}", "--count", "1", "--seed", "10", *STARTER],
                   "image_to_image", None),
    "inpaint": (["inpaint", "{source}", "a moon on the right, on a blue background",
                 "--mask", "{mask}", "--seed", "1", *STARTER], "inpaint", None),
    "outpaint": (["outpaint", "{source}", SOURCE_PROMPT, "--right", "64", "--seed", "1",
                  *STARTER], "outpaint", None),
    "regions": (["regions", "on a blue background", "--region", "0,0,64,64:a moon",
                 "--region", "64,64,64,64:a horse", "--width", "128", "--height", "128",
                 "--seed", "1", *STARTER], "regions", None),
    "instruct": (["instruct", "{source}", "make it winter", "--model", "{pix2pix}",
                  "--steps", "2", "--seed", "4"], "instruct_pix2pix", "pix2pix"),
    "upscale": (["upscale", "{source}", "--model", "{upscaler}"], "upscale", "upscaler"),
    "remove-background": (["remove-background", "{source}", "--model", "{segmenter}"],
                          "remove_background", "segmenter"),
    "replace-background": (["replace-background", "{source}", "a moon", "--segmenter",
                            "{segmenter}", "--seed", "1", *STARTER], "replace_background",
                           "segmenter"),
    "restore-faces": (["restore-faces", "{source}", "--box", "32,32,48,48", "--model",
                       "{face restorer}"], "restore_faces", "face restorer"),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_every_edit_connects_to_nothing(studio, layer, tmp_path, edit):
    words, operation, model = EDITS[edit]
    names = {"source": studio["source"], "mask": studio["mask"]}
    if model is not None:
        names[model] = installed(studio, model)
    offline = offline_in(studio["folder"], layer, tmp_path / "connections.log")
    made = succeeded(offline.easel(*(word.format(**names) for word in words)))
    assert made, "the command printed no picture"
    for picture in made:
        assert signed_library_picture(picture, offline.home)["operation"] == operation
    assert offline.attempted() == ""


# --- the window: its start and its first picture -------------------------------------------------

def test_the_window_starts_and_makes_its_first_picture_connecting_to_nothing(offline):
    # Plain `easel` opens the window; a scripted person asks it for a picture and closes it
    # when the picture came (tests/offline_guard.py: WINDOW_FIRST_PICTURE). In the namespace
    # (traced, where strace runs) the window stays open a while longer, as a person's would:
    # code that phones home late (a telemetry uploader) does it in that time.
    report = offline.home.parent / "window-report.txt"
    linger = NATIVE_SETTLE_S if offline.layer is NO_NETWORK else 0
    window = offline.run(WINDOW_FIRST_PICTURE, WINDOW_PROMPT, str(linger), timeout=300,
                         **{WINDOW_REPORT_ENV: str(report)})
    said = report.read_text().split("\n", 1)[0] if report.exists() else "(nothing)"
    assert said.startswith("picture "), f"the window said {said}; {window.stderr}"
    assert window.returncode == 0 and "Traceback" not in window.stderr, window.stderr
    (made,) = said.split()[1:]
    metadata = signed_library_picture(Path(made), offline.home)
    assert (metadata["operation"], metadata["prompt"]) == ("text_to_image", WINDOW_PROMPT)
    assert offline.attempted() == ""

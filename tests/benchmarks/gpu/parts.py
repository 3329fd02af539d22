"""Packages that travel to the device machine in parts, one per call, put together there.

A call to the device carries the working tree and at most 64 MiB in all; the tracked tree alone
is about 36 MiB, so what the device lacks (onnxruntime-gpu, diffusers: about 62 MB packed)
goes in parts over consecutive calls while the machine stays warm, and is put together there.

Here (``split``): the archives ``fetch_wheels.sh`` made are cut into parts that each fit beside
the tree as it is now: ``build/parts/1``, ``2``, ... Part 1 holds the small archives whole
(diffusers, so the models can be built while the other parts travel) and the first piece of
the large one; every part carries ``manifest.json`` (each piece's size and SHA-256, and each
archive's).

There (``stage N``, ``assemble``): each call copies its part to ``WORK/parts`` (``/tmp``
survives between calls while the machine is held) and checks that the parts of earlier calls
are still there, which is the probe that files persist; an archive whose pieces are all there
is joined, checked and unpacked into ``WORK/site-NAME``. ``probe`` prints what the machine has;
``check`` runs a small float16 graph on ONNX Runtime's CUDA provider against NumPy.

Only the standard library here (``check`` imports onnx and numpy, which the device has): it runs
with the device's own Python before anything is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
BUILD = Path(__file__).resolve().parent / "build"
MIB = 1 << 20
CALL_LIMIT = 64 * MIB  # what one call may carry, the working tree included
MARGIN = 1 * MIB  # for files others add to the tree before the device session
MANIFEST_ROOM = 64 * 1024  # each part's manifest.json
# archive -> the folder under WORK it unpacks into.
SITES = {"python.tar.xz": "site-python", "onnxruntime.tar.xz": "site-ort"}
PROBED_PACKAGES = ("torch", "transformers", "huggingface_hub", "diffusers", "onnx", "onnxscript",
                   "onnxruntime", "onnxruntime-gpu", "numpy", "tokenizers", "safetensors",
                   "Pillow", "nvidia-ml-py", "triton", "accelerate")


# --- here: how much a call can carry, and the parts ------------------------------------------

def tree_bytes(repo: Path = REPO) -> int:
    """What every call sends before any carried path: tracked and untracked-not-ignored
    files, and a ``shared/`` folder in the checkout."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=repo, capture_output=True,
                            check=True).stdout.split(b"\0")
    files = {repo / os.fsdecode(name) for name in listed if name}
    shared = repo / "shared"
    if shared.is_dir():
        files |= {path for path in shared.rglob("*")}
    return sum(path.stat().st_size for path in files if path.is_file() and not path.is_symlink())


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def split(large: Path, small: list[Path], out: Path, budget: int) -> list[Path]:
    """Cut ``large`` into pieces and lay out the parts under ``out`` (emptied first): part 1
    holds ``small`` whole and the first piece; parts are about equal. Returns the part folders."""
    total = large.stat().st_size + sum(path.stat().st_size for path in small)
    count = math.ceil(total / (budget - MANIFEST_ROOM))
    share = math.ceil(total / count)
    first = share - sum(path.stat().st_size for path in small)
    if first <= 0:
        raise SystemExit(f"The small archives alone are larger than a call's {budget} bytes.")
    shutil.rmtree(out, ignore_errors=True)
    folders = [out / str(number) for number in range(1, count + 1)]
    for folder in folders:
        folder.mkdir(parents=True)
    for path in small:
        shutil.copyfile(path, folders[0] / path.name)
    pieces = []
    with open(large, "rb") as source:
        for number, folder in enumerate(folders):
            piece = folder / f"{large.name}.{number:02d}"
            piece.write_bytes(source.read(first if number == 0 else share))
            pieces.append(piece)
        if source.read(1):
            raise SystemExit("The pieces do not hold the whole archive.")
    manifest = {
        "parts": count,
        "archives": {path.name: {"sha256": sha256(path), "pieces": [path.name]} for path in small},
        "pieces": {},
    }
    manifest["archives"][large.name] = {"sha256": sha256(large),
                                        "pieces": [piece.name for piece in pieces]}
    for number, folder in enumerate(folders, start=1):
        for path in sorted(folder.iterdir()):
            manifest["pieces"][path.name] = {"part": number, "bytes": path.stat().st_size,
                                             "sha256": sha256(path)}
    for folder in folders:
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    for number, folder in enumerate(folders, start=1):
        size = sum(path.stat().st_size for path in folder.iterdir())
        if size > budget:
            raise SystemExit(f"Part {number} holds {size} bytes, more than a call's {budget}.")
    return folders


# --- there: stage each part, put the archives together -------------------------------------

def stage(number: int, work: Path, parts: Path = BUILD / "parts") -> dict:
    """Keep the part this call carried under WORK/parts; its manifest."""
    carried = parts / str(number)
    if not (carried / "manifest.json").is_file():
        raise SystemExit(f"Part {number} did not travel: {carried} is missing (name it in "
                         f"the call's carry).")
    manifest = json.loads((carried / "manifest.json").read_text())
    staged = work / "parts"
    staged.mkdir(parents=True, exist_ok=True)
    missing = [earlier for earlier in range(1, number)
               if not (staged / f"part-{earlier}.ok").is_file()]
    if missing:
        raise SystemExit(f"The files of part {missing[0]} are gone: this machine is not the one "
                         f"the earlier calls ran on (it went back between calls). Start again "
                         f"from part 1, with each call right after the last.")
    for name, entry in manifest["pieces"].items():
        if entry["part"] != number:
            continue
        shutil.copyfile(carried / name, staged / name)
        if sha256(staged / name) != entry["sha256"]:
            raise SystemExit(f"{name} arrived damaged (its SHA-256 differs); carry part "
                             f"{number} again.")
    (staged / "manifest.json").write_text(json.dumps(manifest))
    (staged / f"part-{number}.ok").write_text("")
    if number > 1:
        print(f"part {number} of {manifest['parts']} staged; the files of the earlier calls "
              f"are still here (files persist between calls)", flush=True)
    else:
        print(f"part 1 of {manifest['parts']} staged in {staged}", flush=True)
    return manifest


def assemble(work: Path) -> list[str]:
    """Join, check and unpack each archive whose pieces have all arrived (once); their names."""
    staged = work / "parts"
    manifest = json.loads((staged / "manifest.json").read_text())
    unpacked = []
    for archive, entry in manifest["archives"].items():
        site = work / SITES[archive]
        done = site / ".unpacked"
        if done.is_file() or not all((staged / piece).is_file() for piece in entry["pieces"]):
            continue
        joined = staged / f"{archive}.whole"  # a piece may have the archive's own name
        with open(joined, "wb") as out:
            for piece in entry["pieces"]:
                with open(staged / piece, "rb") as source:
                    shutil.copyfileobj(source, out, 16 * MIB)
        if sha256(joined) != entry["sha256"]:
            raise SystemExit(f"{archive} does not match its SHA-256 once put together.")
        shutil.rmtree(site, ignore_errors=True)
        site.mkdir(parents=True)
        with tarfile.open(joined, "r:xz") as tar:
            _extract(tar, site)
        joined.unlink()
        link_nvidia_libraries(site)
        done.write_text("")
        unpacked.append(archive)
        print(f"{archive}: unpacked into {site}", flush=True)
    return unpacked


def _extract(tar: tarfile.TarFile, site: Path) -> None:
    """Unpack ``tar`` into ``site``, refusing members that would land outside it or are
    links or devices: tarfile's "data" filter where this Python has it (3.11.4 and later;
    Debian 12's python3.11 is 3.11.2), the same checks by hand where it has not."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(site, filter="data")
        return
    root = site.resolve()
    for member in tar.getmembers():
        target = (site / member.name).resolve()
        if not target.is_relative_to(root) or not (member.isfile() or member.isdir()):
            raise SystemExit(f"The archive holds {member.name!r}, which it must not.")
    tar.extractall(site)


def link_nvidia_libraries(site: Path) -> None:
    """Make the ``nvidia`` folder of the Python that holds torch visible beside the unpacked
    packages: onnxruntime's ``preload_dlls`` looks for CUDA 13 and cuDNN under
    ``../nvidia/cu13/lib`` and ``../nvidia/cudnn/lib`` of its own folder."""
    if not (site / "onnxruntime").is_dir() or (site / "nvidia").exists():
        return
    spec = importlib.util.find_spec("nvidia")
    locations = list(spec.submodule_search_locations or []) if spec else []
    if locations:
        (site / "nvidia").symlink_to(locations[0], target_is_directory=True)


def nvidia_library_folders() -> list[str]:
    """The ``lib`` folders of the nvidia-* wheels beside torch (CUDA 13's ``cu13/lib``,
    ``cudnn/lib``, ...): put on LD_LIBRARY_PATH too, should ``preload_dlls`` not find them
    through the link."""
    spec = importlib.util.find_spec("nvidia")
    roots = list(spec.submodule_search_locations or []) if spec else []
    return sorted(str(folder) for root in roots for folder in Path(root).glob("*/lib")
                  if folder.is_dir())


# --- there: what the machine has ----------------------------------------------------------

def probe(work: Path) -> None:
    """Print what the benchmark depends on, read at no cost in the first call."""
    print(f"python {platform.python_version()} at {sys.executable}; {os.cpu_count()} CPUs")
    for name in PROBED_PACKAGES:
        try:
            print(f"  {name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            print(f"  {name}: not installed")
    spec = importlib.util.find_spec("nvidia")
    for location in list(spec.submodule_search_locations or []) if spec else []:
        libraries = sorted(path.name for path in Path(location).glob("*/lib/lib*.so*"))
        print(f"  nvidia libraries in {location}: {', '.join(libraries[:40])}")
    for folder in (work, Path("/dev/shm")):
        if folder.exists():
            usage = shutil.disk_usage(folder)
            print(f"  {folder}: {usage.free / 1e9:.0f} GB free of {usage.total / 1e9:.0f} GB")
    try:
        memory = Path("/proc/meminfo").read_text().splitlines()[:2]
        print("  " + "; ".join(" ".join(line.split()) for line in memory))
    except OSError:
        pass
    smi = shutil.which("nvidia-smi")
    if smi:
        query = "name,memory.total,memory.used,driver_version,clocks.sm,clocks.max.sm"
        print(subprocess.run([smi, f"--query-gpu={query}", "--format=csv"],
                             capture_output=True, text=True).stdout.strip())


def check_cuda() -> int:
    """A MatMul, Softmax and Conv in float16 on the CUDA provider against NumPy; 0 when right.

    The carried CUDA provider keeps only sm_90 code (fatbin.py): this says at once whether it
    loads and runs on this GPU, before minutes go into the benchmark."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    ort.preload_dlls(directory="")
    float16 = TensorProto.FLOAT16
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["ab"]),
         helper.make_node("Softmax", ["ab"], ["soft"], axis=-1),
         helper.make_node("Conv", ["image", "kernel"], ["conv"], pads=[1, 1, 1, 1])],
        "check",
        [helper.make_tensor_value_info("a", float16, [64, 64]),
         helper.make_tensor_value_info("b", float16, [64, 64]),
         helper.make_tensor_value_info("image", float16, [1, 8, 32, 32]),
         helper.make_tensor_value_info("kernel", float16, [8, 8, 3, 3])],
        [helper.make_tensor_value_info("soft", float16, [64, 64]),
         helper.make_tensor_value_info("conv", float16, [1, 8, 32, 32])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CUDAExecutionProvider"])
    if session.get_providers()[0] != "CUDAExecutionProvider":
        print(f"the CUDA provider did not start: {session.get_providers()}")
        return 1
    rng = np.random.default_rng(0)
    # Scaled so that float16 rounding, not the size of the sums, sets the error.
    feeds = {"a": rng.standard_normal((64, 64)) / 4, "b": rng.standard_normal((64, 64)) / 4,
             "image": rng.standard_normal((1, 8, 32, 32)),
             "kernel": rng.standard_normal((8, 8, 3, 3)) / 8}
    feeds = {name: value.astype(np.float16) for name, value in feeds.items()}
    soft, conv = session.run(None, feeds)
    product = feeds["a"].astype(np.float32) @ feeds["b"].astype(np.float32)
    expected = np.exp(product - product.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    padded = np.pad(feeds["image"].astype(np.float32), ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))
    expected_conv = np.einsum("nchwij,ocij->nohw", windows, feeds["kernel"].astype(np.float32))
    errors = (np.abs(soft - expected).max(), np.abs(conv - expected_conv).max())
    print(f"CUDA provider of onnxruntime {ort.__version__} runs on this GPU: largest error "
          f"softmax(MatMul) {errors[0]:.1e}, Conv {errors[1]:.1e} (float16)")
    return 0 if max(errors) < 1e-2 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    splitting = commands.add_parser("split", help="here: cut the archives into parts")
    splitting.add_argument("large", type=Path)
    splitting.add_argument("small", type=Path, nargs="*")
    splitting.add_argument("--out", type=Path, default=BUILD / "parts")
    staging = commands.add_parser("stage", help="there: keep the part this call carried")
    staging.add_argument("number", type=int)
    for command in ("assemble", "probe"):
        commands.add_parser(command)
    commands.add_parser("libdirs", help="there: the nvidia-* library folders, for "
                                        "LD_LIBRARY_PATH")
    commands.add_parser("check", help="there: run a float16 graph on the CUDA provider")
    for sub in commands.choices.values():
        sub.add_argument("--work", type=Path, default=Path("/tmp/easel-gpu"))
    arguments = parser.parse_args(argv)
    if arguments.command == "split":
        tree = tree_bytes()
        budget = CALL_LIMIT - tree - MARGIN
        folders = split(arguments.large, arguments.small, arguments.out, budget)
        print(f"working tree {tree / MIB:.1f} MiB, so a call carries at most "
              f"{budget / MIB:.1f} MiB: {len(folders)} parts")
        for folder in folders:
            size = sum(path.stat().st_size for path in folder.iterdir())
            print(f"  {folder.relative_to(REPO)}: {size / MIB:.1f} MiB")
        return 0
    if arguments.command == "stage":
        stage(arguments.number, arguments.work)
        return 0
    if arguments.command == "assemble":
        assemble(arguments.work)
        return 0
    if arguments.command == "probe":
        probe(arguments.work)
        return 0
    if arguments.command == "libdirs":
        print(os.pathsep.join(nvidia_library_folders()))
        return 0
    return check_cuda()


if __name__ == "__main__":
    sys.exit(main())

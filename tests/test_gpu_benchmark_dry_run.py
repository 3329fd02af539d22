"""The GPU benchmark's device run, checked here where there is no GPU (issue 20).

The dry run goes through every step ``tests/benchmarks/gpu/device_run.sh`` takes on the device
(random-weight models built from configs, exported by Easel's exporter, both sides of the
benchmark, the fp32 picture, torch.compile, the profile, the results file), with tiny models
on the CPU provider. The packing that gets onnxruntime-gpu there is checked on small stand-ins:
parts that fit a call, staged in order and put together, and the CUDA provider's code kept to
one GPU architecture in a synthetic library.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tests.benchmarks.gpu import fatbin, parts

REPO = Path(__file__).resolve().parents[1]
DEVICE_RUN = REPO / "tests" / "benchmarks" / "gpu" / "device_run.sh"


# --- the dry run -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[dict, str, Path]:
    pytest.importorskip("diffusers")
    pytest.importorskip("torch")
    if shutil.which("bash") is None:
        pytest.skip("the device run is a bash script")
    root = tmp_path_factory.mktemp("gpu-dry-run")
    environment = {**os.environ, "EASEL_GPU_WORK": str(root / "work"), "OUT": str(root / "out"),
                   "PYTHON": sys.executable}
    completed = subprocess.run(["bash", str(DEVICE_RUN), "--dry-run"], cwd=REPO,
                               env=environment, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    results = json.loads((root / "out" / "results.json").read_text())
    return results, completed.stdout, root / "out"


@pytest.mark.slow
def test_dry_run_measures_every_model_and_side(dry_run):
    results, _, _ = dry_run
    assert results["dry_run"] is True
    assert results["machine"]["cpu"] and results["machine"]["onnxruntime-gpu"]
    assert list(results["configs"]) == ["sd15", "turbo", "sdxl"]  # the order
    for name, record in results["configs"].items():
        assert (record["width"], record["height"]) == (64, 64), name
        assert record["provider"] == "cpu" and record["precision"] == "fp32"
        assert record["model"]["built_s"] >= 0 and record["model"]["exported_s"] >= 0
        for side in ("easel", "diffusers", "easel-fp32"):
            measured = record["sides"][side]
            assert "error" not in measured and "skipped" not in measured, (name, side)
            assert measured["median_ms"] > 0 and len(measured["runs_s"]) >= 1
            assert "gpu_memory_peak_mb" in measured and measured["gpu_memory_how"]
        easel = record["sides"]["easel"]
        assert easel["provider"] == "cpu" and easel["precision"] == "fp32"
        assert easel["cuda_graph"] is False and "provider_options" in easel
        ratio = record["sides"]["diffusers"]["median_ms"] / easel["median_ms"]
        assert record["speed_up"] == pytest.approx(ratio, rel=1e-2)
        for pair in ("fp16_vs_fp32", "easel_vs_diffusers"):
            assert 0 <= record[pair]["mean"] <= record[pair]["max"] <= 255, (name, pair)


@pytest.mark.slow
def test_dry_run_judges_no_target_but_keeps_them(dry_run):
    results, _, _ = dry_run
    targets = {name: [target["target"] for target in record["targets"]]
               for name, record in results["configs"].items()}
    assert any("550 ms" in target for target in targets["sd15"])
    assert any("35 ms" in target for target in targets["turbo"])
    assert all(any("1.3x" in target for target in found) for found in targets.values())
    for record in results["configs"].values():
        assert all(target["met"] is None for target in record["targets"])


@pytest.mark.slow
def test_dry_run_profiles_the_unet_and_compiles_sd15(dry_run):
    results, _, _ = dry_run
    for name, record in results["configs"].items():
        profile = record["profile"]
        operators = [row[0] for row in profile["by_op_type"]]
        assert "Conv" in operators, name
        assert profile["call_ms"] > 0 and profile["ops_ms"] > 0
        assert sum(row[2] for row in profile["by_op_type"]) <= 1.0001
    compiled = results["configs"]["sd15"]["sides"]["diffusers-compile"]
    assert compiled["compile"]["backend"] == "eager" and compiled["median_ms"] > 0
    assert results["configs"]["sd15"]["speed_up_vs_compile"] > 0
    assert "diffusers-compile" not in results["configs"]["turbo"]["sides"]


@pytest.mark.slow
def test_dry_run_prints_one_json_line_per_model_and_the_table(dry_run):
    results, stdout, out = dry_run
    lines = [json.loads(line.removeprefix("RESULT ")) for line in stdout.splitlines()
             if line.startswith("RESULT ")]
    assert {line["config"] for line in lines} == {"sd15", "turbo", "sdxl"}
    table = (out / "results.txt").read_text()
    assert "DRY RUN" in table
    for name, record in results["configs"].items():
        row = next(line for line in table.splitlines() if line.startswith(name))
        assert f"{record['sides']['easel']['median_ms']:.1f}" in row
    assert (out / "run.log").read_text().strip().endswith(str(out / "results.json"))


# --- the real-size models --------------------------------------------------------------------

# Millions of parameters per component, as resources/configs/*/README.md give them.
REAL_SIZES = {
    "sd15": {"unet": 860, "vae": 84, "text_encoder": 123},
    "turbo": {"unet": 866, "vae": 84, "text_encoder": 340},
    "sdxl": {"unet": 2567, "vae": 84, "text_encoder": 123, "text_encoder_2": 695},
}


@pytest.mark.parametrize("name", list(REAL_SIZES))
def test_real_size_models_have_the_real_architectures(name):
    torch = pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    from tests.benchmarks.gpu import models

    configs = models.component_configs(models.FAMILIES[name], "real")
    with torch.device("meta"):  # shapes only: no memory, no time
        sizes = {component: sum(parameter.numel() for parameter in build(
                     configs[component]).parameters()) / 1e6
                 for component, build in models.component_builders().items()
                 if component in configs}
    assert sizes == pytest.approx(REAL_SIZES[name], rel=0.01)
    assert configs["model_index"]["scheduler"][1] == configs["scheduler"]["_class_name"]


def test_the_turbo_model_is_one_easel_takes_for_turbo():
    from engine.export.source import distillation
    from tests.benchmarks.gpu import models

    configs = models.component_configs(models.FAMILIES["turbo"], "real")
    source = type("Source", (), {"scheduler": configs["scheduler"], "unet": configs["unet"]})
    assert distillation(source) == "turbo"
    assert configs["unet"]["sample_size"] * 8 == 512  # SD 2.1's layers, drawn at 512x512
    assert configs["scheduler"]["prediction_type"] == "epsilon"


# --- the parts that carry the packages -------------------------------------------------------

def _archive(path: Path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:xz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_parts_fit_a_call_and_come_together_in_order(tmp_path):
    noise = np.random.default_rng(0).bytes(300_000)  # does not compress
    _archive(tmp_path / "onnxruntime.tar.xz", {"onnxruntime/lib.so": noise})
    _archive(tmp_path / "python.tar.xz", {"diffusers/__init__.py": b"VERSION = 1\n"})
    budget = 200_000
    folders = parts.split(tmp_path / "onnxruntime.tar.xz", [tmp_path / "python.tar.xz"],
                          tmp_path / "parts", budget)
    assert len(folders) == 3
    for folder in folders:
        assert sum(path.stat().st_size for path in folder.iterdir()) <= budget
    assert (folders[0] / "python.tar.xz").is_file()

    work = tmp_path / "work"
    with pytest.raises(SystemExit, match="files of part 1 are gone"):
        parts.stage(2, work, tmp_path / "parts")  # a fresh machine: call 1's files are not here
    parts.stage(1, work, tmp_path / "parts")
    assert parts.assemble(work) == ["python.tar.xz"]  # diffusers first: the builds need it
    assert (work / "site-python" / "diffusers" / "__init__.py").read_bytes() == b"VERSION = 1\n"
    parts.stage(2, work, tmp_path / "parts")
    assert parts.assemble(work) == []
    parts.stage(3, work, tmp_path / "parts")
    assert parts.assemble(work) == ["onnxruntime.tar.xz"]
    assert (work / "site-ort" / "onnxruntime" / "lib.so").read_bytes() == noise


def test_parts_come_together_through_the_script_as_install_parts_runs_it(tmp_path):
    _archive(tmp_path / "python.tar.xz", {"diffusers/__init__.py": b"VERSION = 2\n"})
    parts.split(tmp_path / "python.tar.xz", [], tmp_path / "parts", 100_000)
    work = tmp_path / "work"
    parts.stage(1, work, tmp_path / "parts")
    script = Path(parts.__file__)
    run = subprocess.run([sys.executable, str(script), "assemble", "--work", str(work)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert (work / "site-python" / "diffusers" / "__init__.py").read_bytes() == b"VERSION = 2\n"


@pytest.mark.parametrize("filtered", [True, False])
def test_unpacking_refuses_links_and_paths_outside(tmp_path, monkeypatch, filtered):
    if not filtered:  # Python 3.11.2 (Debian 12) has no tarfile data filter
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    for name, member in (("outside", tarfile.TarInfo("../escape.txt")),
                         ("link", tarfile.TarInfo("lib/link"))):
        if name == "link":
            member.type, member.linkname = tarfile.SYMTYPE, "/etc/passwd"
        path = tmp_path / f"{name}.tar"
        with tarfile.open(path, "w") as tar:
            tar.addfile(member, io.BytesIO(b""))
        site = tmp_path / f"site-{name}-{filtered}"
        site.mkdir()
        refused = (SystemExit, getattr(tarfile, "FilterError", SystemExit))
        with tarfile.open(path) as tar, pytest.raises(refused):
            parts._extract(tar, site)
        assert not (tmp_path / "escape.txt").exists() and not (site / "lib" / "link").exists()


def test_a_damaged_part_is_refused(tmp_path):
    _archive(tmp_path / "onnxruntime.tar.xz", {"a": np.random.default_rng(1).bytes(50_000)})
    folders = parts.split(tmp_path / "onnxruntime.tar.xz", [], tmp_path / "parts", 100_000)
    piece = next(path for path in folders[0].iterdir() if path.name != "manifest.json")
    piece.write_bytes(piece.read_bytes()[:-1] + b"\0")
    with pytest.raises(SystemExit, match="arrived damaged"):
        parts.stage(1, tmp_path / "work", tmp_path / "parts")


# --- keeping one GPU architecture --------------------------------------------------------------

def _entry(arch: int, payload: bytes) -> bytes:
    header = struct.pack("<HHIQIIHHI", 2, 0x101, 64, len(payload), 0, 0, 0, 0, arch)
    return header.ljust(64, b"\0") + payload


def _fatbin(*entries: bytes) -> bytes:
    body = b"".join(entries)
    return struct.pack("<IHHQ", fatbin.FATBIN_MAGIC, 1, 16, len(body)) + body


def _library(section: bytes) -> bytes:
    """A 64-bit ELF file with a .shstrtab and a .nv_fatbin section holding ``section``."""
    names = b"\0.shstrtab\0.nv_fatbin\0"
    names_at, section_at = 64, 64 + len(names)
    table_at = section_at + len(section) + (-(section_at + len(section)) % 8)
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x28, table_at)
    struct.pack_into("<HHH", header, 0x3A, 64, 3, 1)
    sections = [bytes(64),
                struct.pack("<IIQQQQ", 1, 3, 0, 0, names_at, len(names)).ljust(64, b"\0"),
                struct.pack("<IIQQQQ", 11, 1, 2, 0, section_at, len(section)).ljust(64, b"\0")]
    body = bytes(header) + names + section
    return body + bytes(table_at - len(body)) + b"".join(sections)


def test_prune_keeps_only_the_architecture_asked_for(tmp_path):
    sm90 = _entry(90, b"sm_90 code" * 10)
    several = _fatbin(_entry(75, b"seventy-five" * 20), sm90, _entry(120, b"blackwell" * 30))
    only_90 = _fatbin(_entry(90, b"hopper only" * 5))
    only_120 = _fatbin(_entry(120, b"no hopper here" * 4))
    section = several + only_90 + only_120
    library = tmp_path / "libonnxruntime_providers_cuda.so"
    original = _library(section)
    library.write_bytes(original)

    result = fatbin.prune(library, arch=90)

    pruned = library.read_bytes()
    assert len(pruned) == len(original)  # nothing else in the library moves
    assert (result.fatbins, result.rewritten, result.entries_dropped) == (3, 1, 2)
    offset, size = fatbin.fatbin_section(pruned)
    assert pruned[:offset] == original[:offset] and pruned[offset + size:] == original[
        offset + size:]
    first = pruned[offset:offset + len(several)]
    assert struct.unpack_from("<Q", first, 8)[0] == len(sm90)
    assert first[16:16 + len(sm90)] == sm90
    assert not any(first[16 + len(sm90):])  # what the other architectures held is zeroes
    # Binaries with only the kept architecture, or none of it, are as they were.
    assert pruned[offset + len(several):offset + size] == section[len(several):]


def test_a_library_not_laid_out_as_expected_is_left_alone(tmp_path):
    broken = bytearray(_fatbin(_entry(90, b"code" * 8), _entry(80, b"other" * 8)))
    struct.pack_into("<Q", broken, 16 + 8, 10_000)  # an entry claiming more than there is
    library = tmp_path / "lib.so"
    library.write_bytes(_library(bytes(broken)))
    before = library.read_bytes()
    with pytest.raises(fatbin.FatbinError, match="overruns"):
        fatbin.prune(library, arch=90)
    assert library.read_bytes() == before
    library.write_bytes(b"not an ELF file at all, just text")
    with pytest.raises(fatbin.FatbinError, match="not a 64-bit"):
        fatbin.prune(library)

"""``easel doctor``: one report for a bug report, that never fails whatever it finds."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from desktop import doctor, paths
from desktop.doctor import Check, Section, report, sections
from engine.manifest import write_manifest
from engine.runtime import cuda_libraries
from engine.runtime import device as device_module
from engine.runtime import providers as providers_module
from engine.runtime.cuda_libraries import WHEEL, CudaLibrary, LibraryCopy, Preload
from engine.runtime.device import NvidiaDriver

TITLES = ["Easel", "ONNX Runtime", "Making pictures", "NVIDIA driver and CUDA libraries",
          "Window", "Data folder", "Models"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def starter() -> Path:
    """The starter model that ships with Easel: a real model to install copies of."""
    return paths.built_in_models_dir() / "starter"


@pytest.fixture
def home(tmp_path, monkeypatch, starter) -> Path:
    """An empty data folder, and no built-in models (the starter's check is not the point)."""
    monkeypatch.setenv("EASEL_HOME", str(tmp_path / "home"))
    (tmp_path / "built-in").mkdir()
    monkeypatch.setenv("EASEL_BUILT_IN_MODELS", str(tmp_path / "built-in"))
    return tmp_path / "home"


def section(text: str, title: str) -> list[str]:
    """The lines of one section of a rendered report, without their indent."""
    block = text.split(f"== {title} ==\n", 1)[1].split("\n\n", 1)[0]
    return [line[2:] for line in block.splitlines()]


def install_copy(model: Path, home: Path, name: str) -> Path:
    folder = home / "models" / name
    shutil.copytree(model, folder)
    write_manifest(folder)  # as the store does at import: the manifest's times are this copy's
    return folder


# The whole report -------------------------------------------------------------------------------

def test_the_report_on_this_machine_checks_every_section(home):
    text = report()
    assert [line[3:-3] for line in text.splitlines() if line.startswith("== ")] == TITLES
    assert "could not check" not in text
    easel = section(text, "Easel")
    assert easel[0].startswith("Easel 0.") and f"source checkout at {ROOT}" in easel[0]
    assert easel[1].startswith(f"Python {sys.version.split()[0]} ") and sys.executable in easel[1]
    runtime = section(text, "ONNX Runtime")
    assert any(line.startswith("Providers in this build: ") and "CPU (CPUExecutionProvider)"
               in line for line in runtime)
    assert f"Data folder: {home} (EASEL_HOME={home})" in section(text, "Data folder")
    assert "Writable: yes" in section(text, "Data folder")
    assert section(text, "Models")[-1] == "no models installed"


def test_run_prints_the_report_and_succeeds(home, capsys, monkeypatch):
    assert doctor.run(None) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("Easel doctor report") and "== Models ==" in printed
    monkeypatch.setattr(doctor, "report", lambda full_checksums=False: f"full={full_checksums}\n")
    assert doctor.main(["--full"]) == 0
    assert doctor.main([]) == 0
    assert capsys.readouterr().out == "full=True\nfull=False\n"


def test_python_m_desktop_doctor_prints_it_without_loading_qt(home):
    code = ("import sys, desktop.doctor as d; status = d.main([]); "
            "print(sorted(m for m in sys.modules if m.startswith('PySide6')), file=sys.stderr); "
            "sys.exit(status)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=os.environ.copy())
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Easel doctor report") and "== Window ==" in done.stdout
    assert done.stderr.strip().splitlines()[-1] == "[]"


# A failing section is a line, never an exception ----------------------------------------------

def test_a_section_that_raises_becomes_one_line_and_the_others_still_come(home, monkeypatch):
    def refused():
        raise PermissionError(errno.EACCES, "Permission denied", "/srv/easel")

    monkeypatch.setattr(paths, "data_dir", refused)
    text = report()
    assert section(text, "Data folder") == [
        "could not check the data folder: PermissionError: [Errno 13] Permission denied: "
        "'/srv/easel'"]
    assert section(text, "Models")[0].startswith("could not check the installed models: "
                                                 "PermissionError")
    assert section(text, "Easel")[0].startswith("Easel ")


def test_a_broken_onnxruntime_still_leaves_a_report(home, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails, as when it is broken
    text = report()
    assert section(text, "ONNX Runtime") == [
        "could not check ONNX Runtime: ModuleNotFoundError: import of onnxruntime halted; None "
        "in sys.modules"]
    assert "Writable: yes" in text


def test_every_check_is_guarded_whatever_it_raises():
    def broken(full):
        raise ValueError()

    checks = [Check("First", "the first thing", broken),
              Check("Second", "the second thing", lambda full: [f"fine, full={full}"])]
    assert sections(True, checks) == [
        Section("First", ("could not check the first thing: ValueError",)),
        Section("Second", ("fine, full=True",)),
    ]


# ONNX Runtime and the GPU -------------------------------------------------------------------------

def test_each_gpu_provider_says_whether_it_can_start(monkeypatch):
    order = []
    problems = {
        "tensorrt": "the TensorRT library libnvinfer.so.10 is missing (install TensorRT 10)",
        "cuda": None, "directml": None}

    def problem(name, installed):
        order.append(name)
        if name == "coreml":
            raise OSError("the check itself broke")
        return problems[name]

    monkeypatch.setattr(providers_module, "available_providers",
                        lambda: ["tensorrt", "cuda", "directml", "coreml", "cpu"])
    monkeypatch.setattr(device_module, "provider_problem", problem)
    monkeypatch.setattr(cuda_libraries, "preload_pip_libraries",
                        lambda: order.append("preload") or Preload(False, "none"))
    monkeypatch.setattr(doctor, "_threads", lambda: 4)
    assert doctor._provider_lines()[1:] == [
        "  TensorRT: cannot start: the TensorRT library libnvinfer.so.10 is missing (install "
        "TensorRT 10)",
        "  CUDA: can start (its libraries load and the driver sees a GPU)",
        "  DirectML: built in (Easel cannot check more without starting a model)",
        "  could not check CoreML: OSError: the check itself broke",
        "  CPU: always available (4 threads by default)",
    ]
    # The wheels' libraries are loaded first, as before a session, so the checks see them.
    assert order == ["preload", "tensorrt", "cuda", "directml", "coreml"]


def test_where_pictures_are_made_names_the_gpu_and_the_precision(home, monkeypatch, tmp_path):
    from desktop import settings as settings_file
    from desktop.settings import Settings
    from engine.runtime import sessions as sessions_module
    from engine.runtime.device import Gpu

    monkeypatch.setattr(providers_module, "available_providers", lambda: ["cuda", "cpu"])
    monkeypatch.setattr(sessions_module, "expected_providers", lambda providers: providers)
    h100 = Gpu("NVIDIA H100 80GB HBM3", 85_028_896_768)
    monkeypatch.setattr(device_module, "nvidia_driver",
                        lambda: NvidiaDriver("libcuda.so.1", True, True, 0, 13000, 1, gpus=(h100,)))
    monkeypatch.setenv("EASEL_CONFIG", str(tmp_path / "config"))
    settings_file.save(Settings(gpu_precision="fp32", cpu_threads=3),
                       settings_file.default_path())
    monkeypatch.setenv("EASEL_PROVIDERS", "cpu")
    threads = sessions_module.RuntimeOptions().thread_count  # every core, as the default
    assert section(report(), "Making pictures")[:2] == [
        "The window (its settings): CUDA on NVIDIA H100 80GB HBM3 (79.2 GiB), fp32, "
        "CUDA graphs where the model allows",
        f"The command line (EASEL_PROVIDERS and defaults): CPU, {threads} thread"
        f"{'s' if threads != 1 else ''}, fp32"]
    monkeypatch.delenv("EASEL_PROVIDERS")
    settings_file.save(Settings(), settings_file.default_path())
    assert section(report(), "Making pictures")[0] == (
        "The window (its settings): CUDA on NVIDIA H100 80GB HBM3 (79.2 GiB), fp16 (the VAE "
        "falls back to fp32 if it overflows), CUDA graphs where the model allows")


def test_several_onnxruntime_packages_are_a_warning(home, monkeypatch):
    versions = {"onnxruntime": "1.22.0", "onnxruntime-gpu": "1.31.1"}
    monkeypatch.setattr(doctor, "_distribution_version", versions.get)
    first = section(report(), "ONNX Runtime")[0]
    assert first == ("WARNING: onnxruntime 1.22.0 and onnxruntime-gpu 1.31.1 are all installed; "
                     "they provide the same module and overwrite each other: uninstall all of "
                     "them, then install one")


def test_the_driver_the_wheels_and_each_library_with_where_it_is(monkeypatch):
    cudnn = Path("/site/nvidia/cudnn/lib/libcudnn.so.9")
    monkeypatch.setattr(device_module, "nvidia_driver", lambda: NvidiaDriver(
        "libcuda.so.1", True, True, 0, 12040, 1, "550.54.14"))
    monkeypatch.setattr(cuda_libraries, "wanted_libraries", lambda: [("cuDNN 9", "libcudnn.so.9")])
    monkeypatch.setattr(cuda_libraries, "built_cuda_major", lambda: 12)
    monkeypatch.setattr(cuda_libraries, "nvidia_wheels", lambda: [("nvidia-cudnn-cu12", "9.1.0")])
    monkeypatch.setattr(cuda_libraries, "preload_pip_libraries", lambda: Preload(
        True, "onnxruntime could not load libcublas.so.12 (missing)", failed=True))
    monkeypatch.setattr(cuda_libraries, "cuda_libraries", lambda: [
        CudaLibrary("cuDNN 9", "libcudnn.so.9", (LibraryCopy(cudnn, WHEEL),), cudnn)])
    assert doctor._nvidia_lines(False) == [
        "NVIDIA driver: 550.54.14, supports CUDA 12.4, sees 1 GPU",
        "nvidia-* wheels: nvidia-cudnn-cu12 9.1.0",
        "Preloading them: onnxruntime could not load libcublas.so.12 (missing)",
        f"cuDNN 9 (libcudnn.so.9): in use from {cudnn} (pip wheel)",
    ]
    monkeypatch.setattr(cuda_libraries, "wanted_libraries", lambda: [])
    monkeypatch.setattr(doctor.platform, "system", lambda: "Darwin")
    assert doctor._nvidia_lines(False) == ["not checked: there is no CUDA on Darwin"]


# The data folder and the models ----------------------------------------------------------------

def test_a_data_folder_that_cannot_be_written_is_said(home, monkeypatch):
    def read_only(**place):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(doctor.tempfile, "mkstemp", read_only)
    assert "Writable: no (Read-only file system)" in section(report(), "Data folder")


def test_each_model_gets_its_checksum_check_and_a_stray_folder_its_reason(home, starter):
    install_copy(starter, home, "good")
    damaged = install_copy(starter, home, "damaged")
    with open(damaged / "scheduler" / "scheduler_config.json", "a") as stream:
        stream.write(" ")
    (home / "models" / "stray").mkdir()
    (home / "models" / "stray" / "easel.json").write_text("{not json")
    lines = section(report(), "Models")
    assert lines[1] == "Checksums: the check done at load"
    assert lines[2].startswith("damaged (diffusion, starter, ")
    assert lines[2].endswith("): Model 'damaged' is damaged: scheduler/scheduler_config.json has "
                             "the wrong size; import it again.")
    assert lines[3].startswith("good (diffusion, starter, ") and \
        lines[3].endswith("): checksums match")
    assert lines[4].startswith("stray: not a model Easel can use: The description of model "
                               "'stray' cannot be read (")
    assert len(lines) == 5


def test_full_checksums_catch_what_the_quick_check_cannot(home, starter):
    model = install_copy(starter, home, "touched")
    changed = model / "scheduler" / "scheduler_config.json"
    before = changed.stat()
    data = bytearray(changed.read_bytes())
    data[-2] = ord("0") if data[-2] != ord("0") else ord("1")  # same size, other content
    changed.write_bytes(bytes(data))
    os.utime(changed, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the same time
    assert section(report(), "Models")[2].endswith("): checksums match")
    full = section(report(full_checksums=True), "Models")
    assert full[1] == "Checksums: every file hashed"
    assert full[2].endswith("scheduler/scheduler_config.json does not match its checksum; "
                            "import it again.")


# How Easel runs -----------------------------------------------------------------------------------

def test_how_easel_runs_frozen_from_a_checkout_or_installed(tmp_path, monkeypatch):
    checkout = tmp_path / "checkout"
    (checkout / "engine").mkdir(parents=True)
    (checkout / "pyproject.toml").write_text('[project]\nname = "easel"\nversion = "9.8.7"\n')
    monkeypatch.setattr(doctor, "_installed_version", lambda: None)
    assert doctor.easel_installation(checkout) == (
        "9.8.7", f"source checkout at {checkout}, not installed")
    monkeypatch.setattr(doctor, "_installed_version", lambda: "9.8.6")
    monkeypatch.setattr(doctor, "_editable", lambda: True)
    assert doctor.easel_installation(checkout) == (
        "9.8.7", f"source checkout at {checkout} (an editable install, recorded as 9.8.6)")
    site = tmp_path / "site-packages"
    site.mkdir()
    assert doctor.easel_installation(site) == ("9.8.6", f"installed package in {site}")
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path / "_internal"), raising=False)
    assert doctor.easel_installation(site) == (
        "9.8.6", f"frozen app (PyInstaller) in {tmp_path / '_internal'}")


def test_easel_doctor_is_a_command(home, capsys):
    from desktop import cli

    assert cli.main(["doctor"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("Easel doctor report")
    assert "== Models ==" in printed and "no models installed" in printed

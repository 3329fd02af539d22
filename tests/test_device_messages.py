"""What the engine says when a GPU provider is tried and the CPU is used: a machine without an
NVIDIA GPU hears that plainly (a note, no advice), a machine whose driver is there but whose
CUDA libraries are not hears what to install (a warning)."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import onnxruntime as ort
import pytest

from desktop.cli.common import say_device
from engine.runtime import device as device_module
from engine.runtime.device import device_report

NO_GPU = "No NVIDIA GPU was found; Easel uses the CPU."
CUDA_LIBRARY_MISSING = "libcublasLt.so.13: cannot open shared object file: No such file"


def loader(driver: object | None, provider_lacks: str | None = None):
    """ctypes' stand-in: the NVIDIA driver library loads as ``driver`` (missing when None);
    the CUDA provider's library fails naming ``provider_lacks``."""
    def load(name: str, global_symbols: bool) -> object:
        if name in ("libcuda.so.1", "nvcuda.dll"):
            if driver is None:
                raise OSError(f"{name}: cannot open shared object file: No such file")
            return driver
        if provider_lacks and "providers_cuda" in name:
            raise OSError(f"{provider_lacks}: cannot open shared object file: No such file")
        return object()
    return load


def driver(init_status: int = 0, version: int = 13000) -> SimpleNamespace:
    def get_version(pointer):
        pointer.contents.value = version
        return 0
    return SimpleNamespace(cuInit=lambda flags: init_status, cuDriverGetVersion=get_version)


@pytest.fixture(autouse=True)
def cuda_13_linux(monkeypatch, tmp_path):
    monkeypatch.setattr(ort, "cuda_version", "13.0", raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    # No kernel driver unless a test makes one (the real machine may have a GPU).
    monkeypatch.setattr(device_module, "NVIDIA_KERNEL_DRIVER", tmp_path / "no-nvidia")


def report(load, requested=("cuda", "cpu"), in_use=("cpu",), installed=("cuda", "cpu")):
    return device_report(list(requested), list(in_use), cpu_threads=2, load=load,
                         installed=list(installed))


def test_no_driver_is_a_plain_note_without_advice():
    said = report(loader(None, "libcublasLt.so.13"))
    assert (said.reason, said.note) == (None, NO_GPU)
    assert said.summary == "CPU (2 threads)"


def test_a_driver_that_sees_no_gpu_is_the_same_note():
    said = report(loader(driver(init_status=100), "libcublasLt.so.13"))
    assert (said.reason, said.note) == (None, NO_GPU)


def test_a_driver_without_cuda_libraries_gets_the_installation_advice():
    said = report(loader(driver(), "libcublasLt.so.13"))
    assert said.note is None
    assert said.reason == (
        "The GPU was not used: CUDA could not start: the CUDA library libcublasLt.so.13 is "
        f"missing (install the CUDA 13 runtime and cuDNN 9 that {ort.package_name} "
        f'{ort.__version__} needs, or pip install "easel[cuda]"); running on the CPU.')


def test_a_kernel_driver_without_its_library_is_a_broken_install(tmp_path, monkeypatch):
    (tmp_path / "nvidia").mkdir()
    monkeypatch.setattr(device_module, "NVIDIA_KERNEL_DRIVER", tmp_path / "nvidia")
    said = report(loader(None, "libcublasLt.so.13"))
    assert said.note is None
    assert "the NVIDIA driver's library libcuda.so.1 is missing (reinstall the NVIDIA driver)" \
        in said.reason


def test_tensorrt_and_cuda_without_a_gpu_make_one_note():
    said = report(loader(None), ("tensorrt", "cuda", "cpu"), installed=("tensorrt", "cuda", "cpu"))
    assert (said.reason, said.note) == (None, NO_GPU)


def test_another_gpu_that_failed_is_still_a_warning(monkeypatch):
    monkeypatch.setattr("sys.platform", "win32")
    said = report(loader(None), ("cuda", "directml", "cpu"), installed=("cuda", "cpu"))
    assert said.note == NO_GPU
    assert said.reason.startswith("The GPU was not used: DirectML could not start: this "
                                  "onnxruntime package was built without it")


def test_no_note_when_the_gpu_runs_or_only_the_cpu_was_asked_for():
    assert report(loader(None), ("cpu",)).note is None
    assert report(loader(driver()), in_use=("cuda", "cpu")).note is None


def test_the_command_line_says_a_note_plainly_and_a_reason_as_a_warning(capsys):
    say_device(report(loader(None, "libcublasLt.so.13")))
    say_device(report(loader(driver(), "libcublasLt.so.13")))
    say_device(report(loader(driver()), in_use=("cuda", "cpu")))
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"easel: {NO_GPU}"
    assert lines[1].startswith("easel: warning: The GPU was not used: CUDA could not start: ")
    assert len(lines) == 2


def test_the_window_shows_the_note_as_information(qtbot, tmp_path):
    from desktop.app.generation import Device
    from tests.app_windows import real_engine, studio_window

    with studio_window(qtbot, tmp_path, real_engine) as window:
        window.studio.device = Device("CPU (2 threads)", None, NO_GPU)
        window.studio.device_changed.emit()
        assert window.device_label.text() == "CPU (2 threads)"  # no ⚠: nothing is wrong
        assert window.device_label.toolTip() == NO_GPU
        assert window.statusBar().currentMessage() != NO_GPU  # no nagging in the status bar


def driver_with_gpus(*gpus: tuple[str, int], failing: int | None = None) -> SimpleNamespace:
    """A driver that sees ``gpus`` (name, bytes); GPU ``failing`` cannot be described."""
    def count(pointer):
        pointer.contents.value = len(gpus)
        return 0

    def get(pointer, index):
        pointer.contents.value = index
        return 0 if index != failing else 101  # CUDA_ERROR_INVALID_DEVICE

    def name(buffer, length, device):
        buffer.value = gpus[device.value][0].encode()[: length - 1]
        return 0

    def memory(pointer, device):
        pointer.contents.value = gpus[device.value][1]
        return 0

    plain = driver()
    return SimpleNamespace(**vars(plain), cuDeviceGetCount=count, cuDeviceGet=get,
                           cuDeviceGetName=name, cuDeviceTotalMem_v2=memory)


def test_the_driver_names_each_gpu_and_its_memory():
    found = device_module.nvidia_driver(loader(driver_with_gpus(
        ("NVIDIA H100 80GB HBM3", 85_028_896_768), ("NVIDIA RTX A2000", 6 * 2**30))))
    assert [gpu.name for gpu in found.gpus] == ["NVIDIA H100 80GB HBM3", "NVIDIA RTX A2000"]
    assert found.describe().endswith(
        "sees 2 GPUs: 0: NVIDIA H100 80GB HBM3, 79.2 GiB; 1: NVIDIA RTX A2000, 6.0 GiB")


def test_a_gpu_the_driver_cannot_describe_is_left_out_not_fatal():
    found = device_module.nvidia_driver(loader(driver_with_gpus(
        ("first", 2**30), ("second", 2**31), failing=0)))
    assert (found.gpu_count, [gpu.name for gpu in found.gpus]) == (2, ["second"])


def test_a_session_on_cuda_names_its_gpu_in_the_status_line():
    said = report(loader(driver_with_gpus(("NVIDIA H100 80GB HBM3", 85_028_896_768))),
                  in_use=("cuda", "cpu"))
    assert said.gpu is not None and said.gpu.memory_bytes == 85_028_896_768
    assert said.summary == "CUDA: NVIDIA H100 80GB HBM3"
    assert replace(said, precision="fp16").summary == "CUDA: NVIDIA H100 80GB HBM3, fp16"


def test_a_cpu_session_names_no_gpu_even_when_one_is_there():
    said = report(loader(driver_with_gpus(("NVIDIA H100 80GB HBM3", 85_028_896_768))),
                  requested=("cpu",))
    assert said.gpu is None and said.summary == "CPU (2 threads)"

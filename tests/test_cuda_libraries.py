"""Where the NVIDIA flavour's CUDA and cuDNN libraries were found, and loading the PyPI ones.

No GPU is needed: the folders are temporary ones holding fake library files, and the system
loader, the process's mapped files and onnxruntime's ``preload_dlls`` are stand-ins.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import onnxruntime as ort
import pytest

from engine.runtime import cuda_libraries
from engine.runtime import device as device_module
from engine.runtime.cuda_libraries import (
    BUNDLE,
    SYSTEM,
    WHEEL,
    CudaLibrary,
    LibraryCopy,
    loaded_libraries,
    parse_ldconfig,
    preload,
    system_library_paths,
    wanted_libraries,
)
from engine.runtime.cuda_libraries import (
    cuda_libraries as find,
)
from engine.runtime.device import device_report, explain_not_started, nvidia_driver

CUDNN = [("cuDNN 9", "libcudnn.so.9")]
CUDART = [("CUDA runtime 13", "libcudart.so.13")]


def library_file(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"\x7fELF fake")
    return path


def no_system(name: str) -> list[Path]:
    return []


# Which libraries are looked for --------------------------------------------------------------

def test_the_libraries_looked_for_follow_the_onnxruntime_build():
    assert wanted_libraries(12, "linux") == [
        ("CUDA driver", "libcuda.so.1"),
        ("CUDA runtime 12", "libcudart.so.12"),
        ("cuBLAS 12", "libcublas.so.12"),
        ("cuBLASLt 12", "libcublasLt.so.12"),
        ("cuRAND", "libcurand.so.10"),
        ("cuDNN 9", "libcudnn.so.9"),
    ]
    windows = dict(wanted_libraries(13, "win32"))
    assert windows["CUDA driver"] == "nvcuda.dll"
    assert windows["cuBLASLt 13"] == "cublasLt64_13.dll"
    assert windows["cuDNN 9"] == "cudnn64_9.dll"
    assert wanted_libraries(13, "darwin") == []  # no CUDA on macOS


def test_a_build_without_cuda_looks_only_for_the_driver(monkeypatch):
    monkeypatch.setattr(ort, "cuda_version", "", raising=False)
    assert wanted_libraries(system="linux") == [("CUDA driver", "libcuda.so.1")]
    monkeypatch.setattr(ort, "cuda_version", "12.8", raising=False)
    assert ("CUDA runtime 12", "libcudart.so.12") in wanted_libraries(system="linux")


# Where they are found --------------------------------------------------------------------------

def test_copies_are_listed_bundle_first_then_wheels_then_system(tmp_path):
    bundle = tmp_path / "bundle"
    in_bundle = library_file(bundle, "libcudnn.so.9")
    site = tmp_path / "site-packages" / "nvidia"
    in_wheel = library_file(site / "cudnn" / "lib", "libcudnn.so.9")
    library_file(site / "cu13" / "lib", "libcudart.so.13")
    in_system = library_file(tmp_path / "usr" / "lib", "libcudnn.so.9")

    (cudnn, cudart, missing) = find(
        CUDNN + CUDART + [("cuRAND", "libcurand.so.10")], bundle=bundle, wheel_roots=[site],
        search_system=lambda name: [in_system] if name == "libcudnn.so.9" else [], loaded=[])

    assert cudnn.copies == (LibraryCopy(in_bundle, BUNDLE), LibraryCopy(in_wheel, WHEEL),
                            LibraryCopy(in_system, SYSTEM))
    assert cudart.copies == (LibraryCopy(site / "cu13" / "lib" / "libcudart.so.13", WHEEL),)
    assert not missing.found
    assert missing.describe() == "cuRAND (libcurand.so.10): not found"
    assert cudnn.describe() == (f"cuDNN 9 (libcudnn.so.9): found at {in_bundle} (bundled with "
                                f"the app); {in_wheel} (pip wheel); {in_system} (system)")


def test_a_bundles_own_nvidia_folders_count_as_bundled(tmp_path):
    bundle = tmp_path / "_internal"
    inside = library_file(bundle / "nvidia" / "cudnn" / "lib", "libcudnn.so.9")
    (cudnn,) = find(CUDNN, bundle=bundle, wheel_roots=[], search_system=no_system, loaded=[])
    assert cudnn.copies == (LibraryCopy(inside, BUNDLE),)


def test_windows_wheels_keep_their_libraries_in_bin_and_an_architecture_folder(tmp_path):
    site = tmp_path / "nvidia"
    old = library_file(site / "cudnn" / "bin", "cudnn64_9.dll")
    new = library_file(site / "cu13" / "bin" / "x86_64", "cudart64_13.dll")
    found = find([("cuDNN 9", "cudnn64_9.dll"), ("CUDA runtime 13", "cudart64_13.dll")],
                 bundle=None, wheel_roots=[site], search_system=no_system, loaded=[])
    assert [library.copies for library in found] == [(LibraryCopy(old, WHEEL),),
                                                     (LibraryCopy(new, WHEEL),)]


def test_one_file_reached_twice_is_listed_once(tmp_path):
    real = library_file(tmp_path / "site" / "nvidia" / "cudnn" / "lib", "libcudnn.so.9")
    linked = tmp_path / "usr" / "lib" / "libcudnn.so.9"
    linked.parent.mkdir(parents=True)
    linked.symlink_to(real)
    (cudnn,) = find(CUDNN, bundle=None, wheel_roots=[tmp_path / "site" / "nvidia"],
                    search_system=lambda name: [linked], loaded=[])
    assert cudnn.copies == (LibraryCopy(real, WHEEL),)


def test_the_copy_in_use_is_the_one_this_process_mapped(tmp_path):
    site = tmp_path / "nvidia"
    wheel = library_file(site / "cudnn" / "lib", "libcudnn.so.9")
    system = library_file(tmp_path / "usr" / "lib", "libcudnn.so.9")
    (cudnn,) = find(CUDNN, bundle=None, wheel_roots=[site],
                    search_system=lambda name: [system], loaded=[system])
    assert cudnn.loaded == system
    assert cudnn.describe() == (f"cuDNN 9 (libcudnn.so.9): in use from {system} (system); "
                                f"also {wheel} (pip wheel)")


def test_the_loader_maps_the_real_file_behind_a_versioned_name(tmp_path):
    # libcuda.so.1 -> libcuda.so.550.54.14: the process's map shows the target's name only.
    target = library_file(tmp_path / "lib", "libcuda.so.550.54.14")
    soname = tmp_path / "lib" / "libcuda.so.1"
    soname.symlink_to(target.name)
    (driver,) = find([("CUDA driver", "libcuda.so.1")], bundle=None, wheel_roots=[],
                     search_system=lambda name: [soname], loaded=[target])
    assert driver.describe() == f"CUDA driver (libcuda.so.1): in use from {soname} (system)"
    # Mapped from a folder that was not searched: said so, not hidden.
    elsewhere = Path("/opt/other/libcudart.so.13.0.96")
    (cudart,) = find(CUDART, bundle=None, wheel_roots=[], search_system=no_system,
                     loaded=[elsewhere])
    assert cudart.describe() == f"CUDA runtime 13 (libcudart.so.13): in use from {elsewhere} " \
                                f"(elsewhere)"


def test_the_loaders_cache_is_read_from_ldconfig():
    listing = ("1234 libs found in cache `/etc/ld.so.cache'\n"
               "\tlibcudart.so.13 (libc6,x86-64) => /usr/local/cuda-13.0/lib/libcudart.so.13\n"
               "\tlibcudnn.so.9 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcudnn.so.9\n"
               "\tlibcudnn.so.9 (libc6) => /usr/lib32/libcudnn.so.9\n"
               "Cache generated by: ldconfig (GNU libc) stable release version 2.36\n")
    assert parse_ldconfig(listing) == {
        "libcudart.so.13": [Path("/usr/local/cuda-13.0/lib/libcudart.so.13")],
        "libcudnn.so.9": [Path("/usr/lib/x86_64-linux-gnu/libcudnn.so.9"),
                          Path("/usr/lib32/libcudnn.so.9")],
    }


def test_system_copies_come_from_the_library_path_the_cache_and_find_library(tmp_path,
                                                                               monkeypatch):
    on_path = library_file(tmp_path / "ld_path", "libcudnn.so.9")
    cached = library_file(tmp_path / "cached", "libcudnn.so.9")
    located = library_file(tmp_path / "located", "libcudnn.so.9")
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("LD_LIBRARY_PATH", f"{tmp_path / 'nowhere'}:{on_path.parent}")
    monkeypatch.setattr(cuda_libraries, "_loader_cache", lambda: {
        "libcudnn.so.9": [cached, tmp_path / "stale" / "libcudnn.so.9"]})
    asked = []

    def find_library(stem):
        asked.append(stem)
        return str(located)  # as on Windows and macOS; Linux gives only a name

    monkeypatch.setattr(cuda_libraries.ctypes.util, "find_library", find_library)
    assert system_library_paths("libcudnn.so.9") == [on_path, cached, located]
    assert asked == ["cudnn"]
    monkeypatch.setattr(cuda_libraries.ctypes.util, "find_library", lambda stem: "libcudnn.so.9")
    assert system_library_paths("libcudnn.so.9") == [on_path, cached]


def test_the_mapped_libraries_are_read_from_the_process_map(tmp_path):
    maps = tmp_path / "maps"
    maps.write_text(
        "7f01-7f02 r--p 00000000 fd:01 123 /usr/lib/x86_64-linux-gnu/libcudnn.so.9.1.0\n"
        "7f02-7f03 r-xp 00001000 fd:01 123 /usr/lib/x86_64-linux-gnu/libcudnn.so.9.1.0\n"
        "7f03-7f04 rw-p 00000000 00:00 0 \n"
        "7ffd-7ffe rw-p 00000000 00:00 0 [stack]\n"
        "7f05-7f06 r--p 00000000 fd:01 9 /work/site packages/nvidia/cu13/lib/libcudart.so.13\n")
    assert loaded_libraries(maps) == [
        Path("/usr/lib/x86_64-linux-gnu/libcudnn.so.9.1.0"),
        Path("/work/site packages/nvidia/cu13/lib/libcudart.so.13"),
    ]
    assert loaded_libraries(tmp_path / "missing") == []


def test_a_frozen_app_searches_its_bundle(tmp_path, monkeypatch):
    assert cuda_libraries.bundle_folder() is None  # tests do not run frozen
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    assert cuda_libraries.bundle_folder() == tmp_path


# Preloading the wheels' libraries --------------------------------------------------------------

class FakeRuntime:
    """onnxruntime's stand-in: ``preload_dlls`` prints what the real one prints, or raises."""

    __version__ = "1.22.0"

    def __init__(self, prints: str = "", raises: Exception | None = None) -> None:
        self.prints, self.raises, self.calls = prints, raises, []

    def preload_dlls(self, **options):
        self.calls.append(options)
        print(self.prints, end="")
        if self.raises:
            raise self.raises


def test_preloading_loads_the_wheels_from_site_packages_and_prints_nothing(capsys):
    runtime = FakeRuntime()
    done = preload(runtime, wheels_present=lambda: True)
    assert (done.ran, done.failed) == (True, False)
    assert done.detail == "the nvidia-* wheels' CUDA and cuDNN libraries were loaded"
    assert runtime.calls == [{"directory": ""}]
    assert capsys.readouterr().out == ""


def test_a_library_that_does_not_load_is_reported_not_printed(capsys):
    runtime = FakeRuntime(
        "Failed to load /site/nvidia/cu13/lib/libcublas.so.13: libcublasLt.so.13: cannot open "
        "shared object file: No such file or directory\n"
        "Failed to load libcublas.so.13: libcublas.so.13: cannot open shared object file\n"
        "Please follow https://onnxruntime.ai/docs/install/#cuda-and-cudnn to install CUDA.\n")
    done = preload(runtime, wheels_present=lambda: True)
    assert (done.ran, done.failed) == (True, True)
    assert done.detail == (
        "onnxruntime could not load /site/nvidia/cu13/lib/libcublas.so.13 (libcublasLt.so.13: "
        "cannot open shared object file: No such file or directory); libcublas.so.13 "
        "(libcublas.so.13: cannot open shared object file)")
    assert capsys.readouterr().out == ""


def test_a_refusal_to_preload_is_reported(capsys):
    runtime = FakeRuntime("\x1b[33mWARNING: onnxruntime-gpu is built with CUDA 11.8, which is not "
                          "supported for preloading. CUDA 12.x or newer is required.\x1b[0m\n")
    done = preload(runtime, wheels_present=lambda: True)
    assert done.failed
    assert done.detail == ("onnxruntime did not load them: onnxruntime-gpu is built with CUDA "
                           "11.8, which is not supported for preloading. CUDA 12.x or newer is "
                           "required.")
    assert capsys.readouterr().out == ""


def test_preloading_that_raises_is_reported_never_raised():
    runtime = FakeRuntime(raises=RuntimeError("Invalid parameter of directory=. The directory "
                                              "does not exist!"))
    done = preload(runtime, wheels_present=lambda: True)
    assert (done.ran, done.failed) == (True, True)
    assert done.detail == ("loading the nvidia-* wheels' libraries failed: Invalid parameter of "
                           "directory=. The directory does not exist!")


def test_nothing_is_preloaded_without_wheels_or_without_preload_dlls():
    runtime = FakeRuntime()
    skipped = preload(runtime, wheels_present=lambda: False)
    assert (skipped.ran, skipped.failed, runtime.calls) == (False, False, [])
    too_old = preload(SimpleNamespace(__version__="1.20.1"), wheels_present=lambda: True)
    assert (too_old.ran, too_old.failed) == (False, True)
    assert "onnxruntime 1.20.1 cannot load the nvidia-* wheels' libraries" in too_old.detail


def test_the_wheels_are_found_in_the_nvidia_package_or_a_bundle(tmp_path, monkeypatch):
    monkeypatch.setattr(cuda_libraries, "nvidia_package_roots", lambda: [])
    monkeypatch.setattr(cuda_libraries, "bundle_folder", lambda: tmp_path)
    assert not cuda_libraries._wheels_present()
    (tmp_path / "nvidia").mkdir()
    assert cuda_libraries._wheels_present()
    monkeypatch.setattr(cuda_libraries, "bundle_folder", lambda: None)
    monkeypatch.setattr(cuda_libraries, "nvidia_package_roots", lambda: [tmp_path / "nvidia"])
    assert cuda_libraries._wheels_present()


# The device report and the driver ---------------------------------------------------------------

def driver(init_status: int = 0, version: int = 13000, gpus: int | None = 1) -> SimpleNamespace:
    def get_version(pointer):
        pointer.contents.value = version
        return 0

    def get_count(pointer):
        pointer.contents.value = gpus
        return 0

    calls = {"cuInit": lambda flags: init_status, "cuDriverGetVersion": get_version}
    if gpus is not None:
        calls["cuDeviceGetCount"] = get_count
    return SimpleNamespace(**calls)


def loader(found_driver: object | None):
    def load(name: str, global_symbols: bool) -> object:
        if name in ("libcuda.so.1", "nvcuda.dll"):
            if found_driver is None:
                raise OSError(f"{name}: cannot open shared object file: No such file")
            return found_driver
        return object()
    return load


@pytest.fixture
def linux_cuda_13(monkeypatch, tmp_path):
    monkeypatch.setattr(ort, "cuda_version", "13.0", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(device_module, "NVIDIA_KERNEL_DRIVER", tmp_path / "no-nvidia")
    return tmp_path


def test_the_device_report_says_where_the_libraries_came_from(linux_cuda_13):
    listed = (CudaLibrary("cuDNN 9", "libcudnn.so.9",
                          (LibraryCopy(Path("/site/nvidia/cudnn/lib/libcudnn.so.9"), WHEEL),),
                          Path("/site/nvidia/cudnn/lib/libcudnn.so.9")),)
    report = device_report(["cuda", "cpu"], ["cuda", "cpu"], cpu_threads=2,
                           load=loader(driver()), installed=["cuda", "cpu"],
                           find_libraries=lambda: listed)
    assert report.libraries == listed
    assert report.library_lines() == [
        "cuDNN 9 (libcudnn.so.9): in use from /site/nvidia/cudnn/lib/libcudnn.so.9 (pip wheel)"]
    # Detail only: the same device and reason are the same report.
    assert report == device_report(["cuda", "cpu"], ["cuda", "cpu"], cpu_threads=2,
                                   find_libraries=lambda: ())


def test_no_library_listing_without_an_nvidia_request_or_an_nvidia_gpu(linux_cuda_13):
    def must_not_look():
        raise AssertionError("looked for CUDA libraries")

    cpu_only = device_report(["cpu"], ["cpu"], cpu_threads=2, find_libraries=must_not_look)
    no_gpu = device_report(["cuda", "cpu"], ["cpu"], cpu_threads=2, load=loader(None),
                           installed=["cuda", "cpu"], find_libraries=must_not_look)
    assert cpu_only.libraries == no_gpu.libraries == ()
    assert no_gpu.note == "No NVIDIA GPU was found; Easel uses the CPU."


def test_the_driver_says_its_version_its_cuda_and_its_gpus(linux_cuda_13, monkeypatch):
    kernel = linux_cuda_13 / "nvidia"
    kernel.mkdir()
    (kernel / "version").write_text(
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu Feb 22 01:44:30 UTC 2024\n"
        "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n")
    monkeypatch.setattr(device_module, "NVIDIA_KERNEL_DRIVER", kernel)
    found = nvidia_driver(loader(driver(version=12040, gpus=2)))
    assert found.describe() == "550.54.14, supports CUDA 12.4, sees 2 GPUs"
    assert nvidia_driver(loader(driver(init_status=100))).describe() == \
        "550.54.14, supports CUDA 13.0, sees no GPU"
    assert nvidia_driver(loader(None)).describe() == (
        "not found (libcuda.so.1 cannot be loaded; the kernel driver is loaded but its library "
        "is missing)")


def test_a_working_cuda_has_no_problem_but_a_session_that_fell_back_still_gets_a_reason(
        linux_cuda_13):
    load = loader(driver())
    assert device_module.provider_problem("cuda", load=load, installed=["cuda", "cpu"]) is None
    assert explain_not_started("cuda", load=load, installed=["cuda", "cpu"]).startswith(
        "onnxruntime did not say why")
    assert device_module.provider_problem("directml", installed=["directml", "cpu"]) is None
    assert "built without it" in device_module.provider_problem("coreml", installed=["cpu"])

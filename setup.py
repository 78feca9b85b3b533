"""Build script: package layout plus the native library pysampler/_C.so, built by CMakeLists.txt.

Metadata lives in pyproject.toml; this file adds what a static file cannot say:

* ``package_dir``: the top-level folders ``kernels/``, ``models/`` and ``bench/`` install as
  ``pysampler.kernels``, ``pysampler.models`` and ``pysampler.bench`` (no top-level package of
  those names; ``pysampler bench`` runs the installed benchmark files).
* the native build: ``build_ext`` configures CMakeLists.txt with Ninja and builds ``_C.so`` (a plain
  shared library of torch ops, loaded by pysampler/backends/native.py). CUDA kernels are added
  when torch is a CUDA build and nvcc is found, or when ``PYSAMPLER_FORCE_CUDA=1``.

Install (torch must already be installed; the build compiles against it):

    pip install --no-build-isolation -e ".[test]"    # development, _C.so lands in ./pysampler
    pip install --no-build-isolation .               # regular install

Build requirements: setuptools>=64, CMake>=3.18 and Ninja (system binaries or the ``cmake`` and
``ninja`` PyPI packages), a C++20 compiler with OpenMP (gcc>=10 or clang>=12), torch.

Environment variables:
    PYSAMPLER_SKIP_NATIVE=1     do not build the native library (pure-Python install).
    PYSAMPLER_REQUIRE_NATIVE=1  make a failed native build fail the install (CI); by default a
                                failure prints a warning and the package works without _C.
    PYSAMPLER_FORCE_CUDA=1      try csrc/cuda even when no CUDA torch/nvcc is detected;
                                PYSAMPLER_FORCE_CUDA=0 never compiles it. A failed CUDA
                                build falls back to the CPU kernels with a warning.
    PYSAMPLER_CUDA_ARCHS        CUDA architectures, CMake style (default "80;90").
    MAX_JOBS                    parallel compile jobs (default: Ninja's choice, all cores).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import traceback

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))


def _packages() -> tuple[list[str], dict[str, str]]:
    """pysampler.* from ./pysampler; pysampler.kernels.*, .models.*, .bench.* from ./kernels, ./models, ./bench."""
    package_dir = {"pysampler": "pysampler"}
    packages = [p for p in find_packages(ROOT, include=["pysampler", "pysampler.*"])]
    for name in ("kernels", "models", "bench"):
        if os.path.isdir(os.path.join(ROOT, name)):
            package_dir[f"pysampler.{name}"] = name
            packages.append(f"pysampler.{name}")
            packages += [f"pysampler.{name}.{sub}" for sub in find_packages(os.path.join(ROOT, name))]
    return sorted(set(packages)), package_dir


def _env_flag(name: str) -> bool | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    return value.strip().lower() not in ("0", "false", "no", "off")


def _find_nvcc() -> str | None:
    try:
        from torch.utils.cpp_extension import CUDA_HOME
    except Exception:  # pragma: no cover - very old or broken torch
        CUDA_HOME = None
    candidates = [os.path.join(CUDA_HOME, "bin", "nvcc")] if CUDA_HOME else []
    candidates.append(shutil.which("nvcc") or "")
    return next((c for c in candidates if c and os.path.exists(c)), None)


def _want_cuda(torch) -> tuple[bool, str, str | None]:
    """(compile csrc/cuda?, why, nvcc path)."""
    nvcc = _find_nvcc()
    forced = _env_flag("PYSAMPLER_FORCE_CUDA")
    if forced is not None:
        return forced, f"PYSAMPLER_FORCE_CUDA={os.environ['PYSAMPLER_FORCE_CUDA']}", nvcc
    if torch.version.cuda is None:
        return False, "torch is not a CUDA build", nvcc
    if nvcc is None:
        return False, "nvcc not found", None
    return True, f"torch CUDA {torch.version.cuda}, nvcc at {nvcc}", nvcc


def _tool(name: str) -> str | None:
    """A build tool from PATH, or from its PyPI package (``cmake``/``ninja`` wheels ship binaries)."""
    found = shutil.which(name)
    if found:
        return found
    try:
        module = __import__(name)
        bin_dir = getattr(module, "BIN_DIR", None)
        if bin_dir and os.path.exists(os.path.join(bin_dir, name)):
            return os.path.join(bin_dir, name)
    except ImportError:
        pass
    return None


class CMakeExtension(Extension):
    """An extension whose only job is to be built by CMakeLists.txt."""

    def __init__(self, name: str) -> None:
        # optional=True: setuptools tolerates a missing output (editable copy step) when the
        # native build failed; we print the reason ourselves.
        super().__init__(name, sources=[], optional=True)


class CMakeBuild(build_ext):
    def get_ext_filename(self, fullname: str) -> str:
        # A plain shared library for torch.ops.load_library, not an importable Python module,
        # so no "cpython-311-x86_64-linux-gnu" suffix: pysampler/_C.so.
        return os.path.join(*fullname.split(".")) + ".so"

    def build_extension(self, ext: Extension) -> None:
        if _env_flag("PYSAMPLER_SKIP_NATIVE"):
            print("pysampler: PYSAMPLER_SKIP_NATIVE set; not building the native library", file=sys.stderr)
            return
        try:
            import torch  # the library compiles against the torch that will load it

            use_cuda, why, nvcc = _want_cuda(torch)
            try:
                self._build_cmake(ext, torch, use_cuda, why, nvcc)
            except Exception as exc:
                if not use_cuda:
                    raise
                self._warn(f"the CUDA kernels could not be built ({type(exc).__name__}: {exc}); building the CPU kernels only")
                self._build_cmake(ext, torch, False, "CUDA build failed", None)
        except Exception as exc:
            if _env_flag("PYSAMPLER_REQUIRE_NATIVE"):
                raise
            self._warn(
                "pysampler's native library (pysampler/_C.so) was NOT built.\n"
                f"  reason: {type(exc).__name__}: {exc}\n"
                "  pysampler still works: it falls back to the plain-PyTorch backend.\n"
                "  Set PYSAMPLER_REQUIRE_NATIVE=1 to make this an error.",
                traceback.format_exc()[-4000:],
            )

    @staticmethod
    def _warn(message: str, details: str = "") -> None:
        line = "=" * 78
        print(f"\n{line}\nWARNING: {message}\n{line}\n{details}", file=sys.stderr)

    def _build_cmake(self, ext: Extension, torch, use_cuda: bool, why: str, nvcc: str | None) -> None:
        from torch.utils.cpp_extension import include_paths, library_paths

        cmake = _tool("cmake")
        ninja = _tool("ninja")
        if cmake is None:
            raise RuntimeError("cmake not found (install CMake>=3.18 or `pip install cmake`)")
        if ninja is None:
            raise RuntimeError("ninja not found (install Ninja or `pip install ninja`)")

        output = os.path.abspath(self.get_ext_fullpath(ext.name))
        # Editable installs build in a temporary folder each time; keep CMake's tree in ./build
        # instead so that re-running `pip install -e .` recompiles only what changed.
        name = f"cmake-{sys.implementation.cache_tag}" + ("-cuda" if use_cuda else "")
        if getattr(self, "editable_mode", False):
            build_temp = os.path.join(ROOT, "build", name)
        else:
            build_temp = os.path.abspath(os.path.join(self.build_temp, name))
        os.makedirs(build_temp, exist_ok=True)
        os.makedirs(os.path.dirname(output), exist_ok=True)

        print(f"pysampler: building native library -> {output} (CUDA kernels: {use_cuda}: {why})", file=sys.stderr)
        args = [
            cmake,
            "-S", ROOT,
            "-B", build_temp,
            "-G", "Ninja",
            f"-DCMAKE_MAKE_PROGRAM={ninja}",
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DPYSAMPLER_PYTHON={sys.executable}",
            f"-DTORCH_INCLUDE_DIRS={';'.join(include_paths())}",
            f"-DTORCH_LIBRARY_DIRS={';'.join(library_paths())}",
            f"-DTORCH_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
            f"-DPYSAMPLER_OUTPUT_DIR={os.path.dirname(output)}",
            f"-DPYSAMPLER_CUDA={'ON' if use_cuda else 'OFF'}",
        ]
        if use_cuda and nvcc:
            args.append(f"-DCMAKE_CUDA_COMPILER={nvcc}")
        if os.environ.get("PYSAMPLER_CUDA_ARCHS"):
            args.append(f"-DPYSAMPLER_CUDA_ARCHITECTURES={os.environ['PYSAMPLER_CUDA_ARCHS']}")
        build = [cmake, "--build", build_temp]
        if os.environ.get("MAX_JOBS"):
            build += ["--parallel", os.environ["MAX_JOBS"]]
        for cmd in (args, build):
            subprocess.run(cmd, check=True)
        if not os.path.exists(output):
            raise RuntimeError(f"CMake finished but {output} is missing")


packages, package_dir = _packages()

setup(
    packages=packages,
    package_dir=package_dir,
    ext_modules=[CMakeExtension("pysampler._C")],
    cmdclass={"build_ext": CMakeBuild},
)

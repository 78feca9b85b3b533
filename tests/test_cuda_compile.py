"""Every CUDA source in csrc/cuda compiles with nvcc, without a CUDA build of torch and without a GPU.

CI (and most development machines) has nvcc but a CPU build of torch, so setup.py never compiles
csrc/cuda there and a syntax or type error in a .cu file would only show up on a GPU machine.
This test runs the compile the CMake build would run: each ``csrc/cuda/*.cu`` (globbed, so new
files are covered) goes through a full ``nvcc -c`` (host and device code, PTX and SASS) for one
architecture, with the CUDA flags and defines of CMakeLists.txt and torch's include paths.
Nothing is linked or loaded.

The CPU torch wheel ships the ATen and c10 CUDA headers but not the headers that torch's own CMake
generates for a CUDA build. The ones torch's headers include are written as stand-ins into a
temporary include directory, mirroring the ``.h.in`` templates of the pytorch repository:

* ``c10/cuda/impl/cuda_cmake_macros.h`` (included by c10/cuda/CUDAMacros.h, hence by every
  c10/cuda header). Its template defines ``C10_CUDA_BUILD_SHARED_LIBS`` (torch's libraries are
  shared; only read on Windows, for dllimport) and ``TORCH_CUDA_VERSION_{MAJOR,MINOR,PATCH,BUILD}``
  (taken here from the nvcc doing the compile). No torch header needs anything else from it.
* ``ATen/cuda/CUDAConfig.h`` (included by ATen/cuda/cub.h and the jiterator headers): the
  ``AT_CUDNN_ENABLED()``/``AT_ROCM_ENABLED()``/``AT_MAGMA_ENABLED()`` switches of a CUDA wheel.

A stand-in is written only when torch's include directories lack the real header.

Skipped when nvcc is not found, when torch's include directory lacks the ATen CUDA headers, when
torch is a CUDA (or ROCm) build (then setup.py compiles csrc/cuda for real), or when nvcc cannot
compile a trivial file with this host compiler; a file is skipped when a torch header it includes
needs a CUDA library header the toolkit lacks (an nvcc-only toolkit, as on CI, has no cusparse.h,
which ATen/cuda/CUDAContext.h pulls in: the c10/cuda headers are enough for a kernel).

The files compile in parallel (one nvcc per core); about 30 s per file on a 2-core machine, at -O0
(errors do not depend on the optimisation level).
``PYSAMPLER_CUDA_ARCHS`` (as for setup.py, CMake style, e.g. "80;90") picks the architectures;
by default the lowest of CMakeLists.txt's default list, the most restrictive one the build targets.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import textwrap
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from torch.utils import cpp_extension

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
CMAKELISTS = ROOT / "CMakeLists.txt"
CUDA_SOURCES = sorted((CSRC / "cuda").glob("*.cu"))

#: Seconds one nvcc run may take (a file takes ~30 s on CI's 2 cores; 2 run at once).
TIMEOUT_S = 900
#: Characters of nvcc's output shown on failure.
TAIL_CHARS = 6000

#: Headers that must come with torch for the compile to mean anything.
REQUIRED_TORCH_HEADERS = ("ATen/cuda/CUDAContext.h", "c10/cuda/CUDAStream.h", "c10/cuda/CUDAMacros.h")

#: Generated headers of a CUDA build of torch that a CPU wheel lacks: path -> stand-in content.
STAND_IN_HEADERS = {
    "c10/cuda/impl/cuda_cmake_macros.h": textwrap.dedent(
        """\
        #pragma once
        // Stand-in for torch's generated c10/cuda/impl/cuda_cmake_macros.h (CPU torch wheels lack it),
        // written by tests/test_cuda_compile.py after pytorch's c10/cuda/impl/cuda_cmake_macros.h.in.
        #define C10_CUDA_BUILD_SHARED_LIBS
        // The CUDA version torch was "built" with: the nvcc compiling this (no torch 2.13 header reads these).
        #define TORCH_CUDA_VERSION_MAJOR __CUDACC_VER_MAJOR__
        #define TORCH_CUDA_VERSION_MINOR __CUDACC_VER_MINOR__
        #define TORCH_CUDA_VERSION_PATCH __CUDACC_VER_BUILD__
        #define TORCH_CUDA_VERSION_BUILD 0
        """
    ),
    "ATen/cuda/CUDAConfig.h": textwrap.dedent(
        """\
        #pragma once
        // Stand-in for torch's generated ATen/cuda/CUDAConfig.h (CPU torch wheels lack it),
        // written by tests/test_cuda_compile.py after pytorch's aten/src/ATen/cuda/CUDAConfig.h.in.
        #define AT_CUDNN_ENABLED() 1
        #define AT_ROCM_ENABLED() 0
        #define AT_MAGMA_ENABLED() 1
        #define NVCC_FLAGS_EXTRA ""
        """
    ),
}

_PROBE = "__global__ void probe(float* x) { x[threadIdx.x] += 1.0f; }\n"


def find_nvcc() -> str | None:
    """nvcc from $CUDA_HOME, PATH, or torch's idea of the CUDA home (as setup.py looks)."""
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    candidates = [os.path.join(home, "bin", "nvcc") if home else None, shutil.which("nvcc")]
    if cpp_extension.CUDA_HOME:
        candidates.append(os.path.join(cpp_extension.CUDA_HOME, "bin", "nvcc"))
    return next((c for c in candidates if c and os.path.isfile(c) and os.access(c, os.X_OK)), None)


def torch_include_dirs() -> list[str]:
    return cpp_extension.include_paths()


def missing_torch_headers(include_dirs: list[str]) -> list[str]:
    return [h for h in REQUIRED_TORCH_HEADERS if not any(os.path.isfile(os.path.join(d, h)) for d in include_dirs)]


def write_stand_in_headers(include_dirs: list[str], out_dir: Path) -> list[str]:
    """Write the generated headers torch lacks under out_dir; returns their relative paths."""
    written = []
    for rel, text in STAND_IN_HEADERS.items():
        if any(os.path.isfile(os.path.join(d, rel)) for d in include_dirs):
            continue
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(rel)
    return written


def cmake_cuda_options() -> list[str]:
    """The options CMakeLists.txt gives CUDA sources ($<$<COMPILE_LANGUAGE:CUDA>:...>), -O levels dropped."""
    found = re.findall(r"\$<\$<COMPILE_LANGUAGE:CUDA>:([^>]*)>", CMAKELISTS.read_text())
    options = [opt for group in found for opt in group.split()]
    if not options:  # the layout changed: fall back to what the build has always needed
        options = ["--expt-relaxed-constexpr", "-Xcompiler=-g0"]
    return [opt for opt in options if not re.fullmatch(r"-O\d?", opt)]


def cuda_archs() -> list[str]:
    """Architectures to compile for: $PYSAMPLER_CUDA_ARCHS, else the lowest of CMakeLists.txt's default."""
    spec = os.environ.get("PYSAMPLER_CUDA_ARCHS")
    if not spec:
        default = re.search(r'set\(PYSAMPLER_CUDA_ARCHITECTURES\s+"([^"]*)"', CMAKELISTS.read_text())
        spec = default.group(1) if default else "80"
        numbered = [a for a in spec.split(";") if re.fullmatch(r"\d+", a.strip())]
        spec = min(numbered, key=int) if numbered else "80"
    archs = []
    for entry in spec.replace(",", ";").split(";"):
        m = re.fullmatch(r"(\d+[af]?)(?:-real|-virtual)?", entry.strip())
        if m:  # "native"/"all" and the like mean nothing without a GPU
            archs.append(m.group(1))
    return archs or ["80"]


def nvcc_command(nvcc: str, source: Path, obj: Path, stand_in_dir: Path, include_dirs: list[str]) -> list[str]:
    """The compile CMake would run for a CUDA source (CMakeLists.txt, Release), at -O0 and for cuda_archs()."""
    cmd = [nvcc, "-c", str(source), "-o", str(obj), "-std=c++20", "-O0", "-DNDEBUG"]
    cmd += [f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}", "-Xcompiler=-fPIC"]
    cmd += cmake_cuda_options()
    cmd += [f"-gencode=arch=compute_{a},code=sm_{a}" for a in cuda_archs()]
    cmd += [f"-I{CSRC}", f"-I{stand_in_dir}"]
    for d in include_dirs:  # SYSTEM in CMakeLists.txt: no warnings from torch's headers
        cmd += ["-isystem", d]
    return cmd


def compile_cuda(cmd: list[str], cwd: Path, timeout: float = TIMEOUT_S) -> tuple[int, str]:
    """(exit status, nvcc's stdout+stderr); a timeout reads as status -1."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return -1, f"{out}\n[nvcc timed out after {timeout:.0f} s]"
    return proc.returncode, proc.stdout


_MISSING_HEADER = re.compile(
    r"^(?P<includer>[^\s:]+):\d+:\d+: fatal error: (?P<header>[^:\s]+): No such file or directory$"  # gcc
    r'|^(?P<includer2>[^\s(]+)\(\d+\): catastrophic error: cannot open source file "(?P<header2>[^"]+)"',  # cudafe
    re.MULTILINE,
)


def missing_toolkit_header(output: str, include_dirs: list[str]) -> str | None:
    """The header a failed compile lacked, when a torch header (not our source) included it, else None.

    Some torch headers include CUDA library headers (ATen/cuda/CUDAContextLight.h: cusparse.h,
    cublas_v2.h, cusolverDn.h) that an nvcc-only toolkit does not ship. That is the machine's
    limitation, not an error in csrc/cuda, so the test skips (with this reason) instead of failing.
    """
    roots = [os.path.realpath(d) + os.sep for d in include_dirs]
    for m in _MISSING_HEADER.finditer(output):
        includer = os.path.realpath(m.group("includer") or m.group("includer2"))
        if any(includer.startswith(r) for r in roots):
            header = m.group("header") or m.group("header2")
            return f"{header} (included by {includer})"
    return None


def _tail(text: str) -> str:
    return text if len(text) <= TAIL_CHARS else "...\n" + text[-TAIL_CHARS:]


class _Compiles:
    def __init__(self, nvcc: str, work: Path, stand_in_dir: Path, include_dirs: list[str]) -> None:
        self.nvcc, self.work, self.stand_in_dir, self.include_dirs = nvcc, work, stand_in_dir, include_dirs
        self.pool = ThreadPoolExecutor(max_workers=max(1, min(len(CUDA_SOURCES), os.cpu_count() or 1)))
        self.futures: dict[Path, Future] = {}

    def command(self, source: Path) -> list[str]:
        return nvcc_command(self.nvcc, source, self.work / f"{source.stem}.o", self.stand_in_dir, self.include_dirs)

    def start(self, sources: list[Path]) -> None:
        for source in sources:
            if source not in self.futures:
                self.futures[source] = self.pool.submit(compile_cuda, self.command(source), self.work)

    def result(self, source: Path) -> tuple[int, str]:
        self.start([source])
        return self.futures[source].result()


@pytest.fixture(scope="module")
def nvcc_setup(tmp_path_factory) -> tuple[str, Path, list[str]]:
    """(nvcc, stand-in include dir, torch include dirs), or a skip saying why the check cannot run."""
    if torch.version.cuda is not None or getattr(torch.version, "hip", None) is not None:
        pytest.skip(f"torch is a GPU build ({torch.__version__}): setup.py compiles csrc/cuda for real")
    nvcc = find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (PATH, $CUDA_HOME/bin, $CUDA_PATH/bin)")
    include_dirs = torch_include_dirs()
    missing = missing_torch_headers(include_dirs)
    if missing:
        pytest.skip(f"torch's include directories lack the ATen/c10 CUDA headers {missing}: {include_dirs}")
    stand_in_dir = tmp_path_factory.mktemp("stand_in_include")
    write_stand_in_headers(include_dirs, stand_in_dir)
    probe_dir = tmp_path_factory.mktemp("nvcc_probe")
    (probe_dir / "probe.cu").write_text(_PROBE)
    cmd = [nvcc, "-c", "probe.cu", "-o", "probe.o", "-std=c++20", "-O0"]
    cmd += [f"-gencode=arch=compute_{a},code=sm_{a}" for a in cuda_archs()]
    rc, out = compile_cuda(cmd, probe_dir, timeout=300)
    if rc != 0:
        pytest.skip(f"nvcc ({nvcc}) cannot compile a trivial C++20 kernel here (host compiler?):\n{_tail(out)}")
    return nvcc, stand_in_dir, include_dirs


@pytest.fixture(scope="module")
def compiles(nvcc_setup, tmp_path_factory, request):
    """The compiles of the selected csrc/cuda/*.cu, started at once in parallel; each test waits for its own."""
    nvcc, stand_in_dir, include_dirs = nvcc_setup
    runs = _Compiles(nvcc, tmp_path_factory.mktemp("cuda_objects"), stand_in_dir, include_dirs)
    selected = [
        item.callspec.params["source"]
        for item in request.session.items
        if getattr(item, "originalname", None) == "test_cuda_source_compiles" and hasattr(item, "callspec")
    ]
    runs.start(selected)
    yield runs
    runs.pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("source", CUDA_SOURCES, ids=[s.name for s in CUDA_SOURCES])
def test_cuda_source_compiles(source: Path, compiles: _Compiles) -> None:
    rc, out = compiles.result(source)
    if rc != 0 and (missing := missing_toolkit_header(out, compiles.include_dirs)):
        pytest.skip(
            f"{source.name}: the CUDA toolkit of {compiles.nvcc} lacks {missing}; install the CUDA library "
            "headers, or include the c10/cuda headers (CUDAStream.h, CUDAGuard.h) instead of ATen/cuda/CUDAContext.h"
        )
    if rc != 0:
        pytest.fail(
            f"nvcc failed on {source.relative_to(ROOT)} (status {rc}).\n"
            f"command: {' '.join(compiles.command(source))}\n"
            f"--- nvcc output (tail) ---\n{_tail(out)}",
            pytrace=False,
        )
    assert (compiles.work / f"{source.stem}.o").stat().st_size > 0


def test_broken_source_fails(nvcc_setup, tmp_path: Path) -> None:
    """The harness reports a type error in device code (a small file, no torch headers: ~1 s)."""
    nvcc, stand_in_dir, _ = nvcc_setup
    broken = tmp_path / "broken.cu"
    broken.write_text('__global__ void k(float* x) {\n  int* p = x;\n  p[0] = "not an int";\n}\n')
    rc, out = compile_cuda(nvcc_command(nvcc, broken, tmp_path / "broken.o", stand_in_dir, []), tmp_path)
    assert rc != 0, out
    assert "broken.cu(2)" in out, out
    assert not (tmp_path / "broken.o").exists()

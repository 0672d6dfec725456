"""Build cllm's two extension modules (ARCHITECTURE.md "Layout"):

  cllm._core._kernels   Cython (cllm/_core/_kernels.pyx, declarations in _kernels.pxd) over the C in csrc/: the
                        kernels of csrc/kernels/ are compiled once per instruction set (baseline, AVX2+FMA,
                        AVX-512) and chosen at run time by CPUID (csrc/runtime/dispatch.c); csrc/runtime/ once
  cllm._core._bpe       pybind11 (cllm/_core/_bpe.cpp, bind_*.cpp) over the C++ of csrc/bpe/

Every source list is a sorted glob of its folder: a new kernel file is built by being there.

Build-time environment:
  CLLM_NATIVE=1         add -march=native (binaries then run only on CPUs like this one)
  CLLM_OPENMP=0         build without OpenMP (every kernel runs single-threaded)
  CLLM_SANITIZE=1       build with -fsanitize=address,undefined (CI runs the kernel tests so)
"""

import os
import platform
import sys
import tempfile
from glob import glob

from Cython.Build import cythonize
from pybind11.setup_helpers import Pybind11Extension
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

try:  # setuptools >= 65 vendors distutils; older ones use the stdlib's
    from setuptools.errors import CompileError, LinkError
except ImportError:  # pragma: no cover
    from distutils.errors import CompileError, LinkError

ISA_SOURCES = sorted(glob("csrc/kernels/*.c"))  # the kernels, one copy per instruction set
KERNEL_SOURCES = ["cllm/_core/_kernels.pyx"] + sorted(glob("csrc/runtime/*.c"))  # dispatch, threads, scratch: once
DEPENDS = sorted(glob("csrc/**/*.[ch]", recursive=True) + glob("csrc/**/*.hpp", recursive=True)
                 + glob("cllm/_core/*.pxd"))
GENERATED = os.path.join("build", "generated")  # headers made at build time (the Unicode tables of the tokenizer)

# Instruction-set flags per compiler family; the probe program must compile with them for the ISA to be built.
ISA_FLAGS = {
    "unix": {
        "avx2": ["-mavx2", "-mfma"],
        "avx512": ["-mavx2", "-mfma", "-mavx512f", "-mavx512cd", "-mavx512bw", "-mavx512dq", "-mavx512vl"],
    },
    "msvc": {"avx2": ["/arch:AVX2"], "avx512": ["/arch:AVX512"]},
}
ISA_PROBE = {
    "avx2": "__m256 a = _mm256_fmadd_ps(_mm256_set1_ps(1.f), _mm256_set1_ps(2.f), _mm256_setzero_ps());"
    " return (int)_mm256_cvtss_f32(a) - 2;",
    "avx512": "__m512 a = _mm512_fmadd_ps(_mm512_set1_ps(1.f), _mm512_set1_ps(2.f), _mm512_setzero_ps());"
    " return (int)_mm512_reduce_add_ps(a) - 32;",
}
OPENMP_PROBE = """#include <omp.h>
int main(void) { int n = 0;
#pragma omp parallel reduction(+ : n)
    n += 1;
    return n > 0 && omp_get_max_threads() > 0 ? 0 : 1; }
"""


def is_x86():
    return platform.machine().lower() in {"x86_64", "amd64", "i386", "i686", "x86"}


def env_flag(name, default="0"):
    return os.environ.get(name, default).strip().lower() not in {"", "0", "false", "no", "off"}


class BuildExt(build_ext):
    """Chooses OpenMP and ISA flags for the compiler at hand, and compiles the ISA sources once per ISA."""

    def try_build(self, source, cflags, ldflags=(), lang="c"):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "probe." + lang)
            with open(path, "w") as f:
                f.write(source)
            try:
                objs = self.compiler.compile([path], output_dir=tmp, extra_postargs=list(cflags))
                self.compiler.link_executable(objs, "probe", output_dir=tmp, extra_postargs=list(ldflags))
            except (CompileError, LinkError, OSError):
                return False
        return True

    def openmp_flags(self):
        """(cflags, ldflags) that give OpenMP with this compiler, or None."""
        if not env_flag("CLLM_OPENMP", "1"):
            return None
        if self.compiler.compiler_type == "msvc":
            candidates = [(["/openmp:llvm"], []), (["/openmp"], [])]
        else:
            candidates = [(["-fopenmp"], ["-fopenmp"])]
            if sys.platform == "darwin":  # Apple clang: libomp from Homebrew or conda
                for prefix in ("/opt/homebrew/opt/libomp", "/usr/local/opt/libomp", os.environ.get("CONDA_PREFIX", "")):
                    if prefix and os.path.isdir(os.path.join(prefix, "include")):
                        candidates.append(
                            (["-Xpreprocessor", "-fopenmp", "-I" + os.path.join(prefix, "include")],
                             ["-L" + os.path.join(prefix, "lib"), "-lomp"])
                        )
                candidates.append((["-Xpreprocessor", "-fopenmp"], ["-lomp"]))
        for cflags, ldflags in candidates:
            if self.try_build(OPENMP_PROBE, cflags, ldflags):
                return cflags, ldflags
        print("cllm: OpenMP not available with this compiler; building single-threaded kernels", file=sys.stderr)
        return None

    def isa_flags(self):
        """{isa: flags} for every ISA beyond baseline that this compiler can build (x86 only)."""
        if not is_x86():
            return {}
        family = "msvc" if self.compiler.compiler_type == "msvc" else "unix"
        built = {}
        for isa, flags in ISA_FLAGS[family].items():
            probe = "#include <immintrin.h>\nint main(void) { %s }\n" % ISA_PROBE[isa]
            if self.try_build(probe, flags):
                built[isa] = flags
        return built

    def generate_sources(self):
        """Build-time generated headers: the tokenizer's Unicode tables (tools/gen_unicode_tables.py)."""
        generator = os.path.join("tools", "gen_unicode_tables.py")
        if os.path.exists(generator):
            os.makedirs(GENERATED, exist_ok=True)
            self.spawn([sys.executable, generator, os.path.join(GENERATED, "unicode_tables.h")])

    def build_extensions(self):
        self.generate_sources()
        msvc = self.compiler.compiler_type == "msvc"
        cflags = ["/O2", "/std:c11"] if msvc else ["-O3", "-Wall", "-Wno-unused-function"]
        ldflags = []
        if env_flag("CLLM_NATIVE") and not msvc:
            cflags.append("-march=native")
        if env_flag("CLLM_SANITIZE") and not msvc:
            san = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer"]
            cflags += san + ["-O1", "-g"]
            ldflags += san
        omp = self.openmp_flags()
        if omp:
            cflags += omp[0]
            ldflags += omp[1]
        isas = self.isa_flags()
        for ext in self.extensions:
            ext.extra_compile_args += cflags
            ext.extra_link_args += ldflags
            if ext.name == "cllm._core._kernels":
                ext.define_macros += [("CLLM_HAVE_" + isa.upper(), "1") for isa in isas]
                ext.define_macros += [("CLLM_BUILD_NATIVE", "1" if env_flag("CLLM_NATIVE") else "0")]
                for isa, flags in [("baseline", [])] + list(isas.items()):
                    ext.extra_objects += self.compiler.compile(
                        ISA_SOURCES,
                        output_dir=os.path.join(self.build_temp, "isa_" + isa),
                        macros=[("CLLM_ISA", isa)],
                        include_dirs=["csrc"],
                        extra_postargs=cflags + flags,
                        depends=DEPENDS,
                    )
        super().build_extensions()


extensions = cythonize(
    [Extension("cllm._core._kernels", KERNEL_SOURCES, include_dirs=["csrc"], depends=DEPENDS)],
    compiler_directives={"language_level": 3},
)
# _bpe: the module file, its binding files (cllm/_core/bind_*.cpp) and the C++ core (csrc/bpe/*.cpp).
BPE_SOURCES = ["cllm/_core/_bpe.cpp"] + sorted(glob("cllm/_core/bind_*.cpp")) + sorted(glob("csrc/bpe/*.cpp"))
extensions.append(
    Pybind11Extension("cllm._core._bpe", BPE_SOURCES, include_dirs=["csrc", GENERATED], depends=DEPENDS, cxx_std=17)
)

setup(ext_modules=extensions, cmdclass={"build_ext": BuildExt})

"""Build the fastrnn kernels (Cython, optional OpenMP).

Environment switches
--------------------
FASTRNN_NO_OPENMP=1       build serial kernels even if the compiler supports OpenMP.
FASTRNN_REQUIRE_OPENMP=1  fail the build if OpenMP cannot be compiled, linked and run
                          (use this for release wheels).
FASTRNN_DEBUG=1           bounds-checked, assertion-enabled, -O0 -g build for debugging.
FASTRNN_SANITIZE=address,undefined
                          add -fsanitize=... (implies FASTRNN_DEBUG).
"""
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

OPENMP_PROBE = r"""
#include <omp.h>
#include <stdio.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    printf("%d\n", n > 0 && omp_get_max_threads() > 0);
    return n > 0 ? 0 : 1;
}
"""


def _flag(name):
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _openmp_flags(compiler_type):
    """Return (compile_args, link_args) for OpenMP, by compiler family."""
    if compiler_type == "msvc":
        return ["/openmp"], []
    if sys.platform == "darwin":
        # Apple clang needs libomp (e.g. Homebrew); the probe decides whether it works.
        return ["-Xpreprocessor", "-fopenmp"], ["-lomp"]
    return ["-fopenmp"], ["-fopenmp"]


def probe_openmp(compiler):
    """Compile, link and run a tiny OpenMP program with the build's compiler."""
    cflags, ldflags = _openmp_flags(compiler.compiler_type)
    tmp = tempfile.mkdtemp(prefix="fastrnn-omp-")
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(OPENMP_PROBE)
        objs = compiler.compile([src], output_dir=tmp, extra_postargs=cflags)
        exe = os.path.join(tmp, "probe")
        compiler.link_executable(objs, "probe", output_dir=tmp, extra_postargs=ldflags)
        out = subprocess.run([exe], capture_output=True, text=True, timeout=60)
        ok = out.returncode == 0 and out.stdout.strip() == "1"
        return ok, ("" if ok else f"probe exited {out.returncode}: {out.stderr.strip()}")
    except Exception as exc:  # compile/link/run failure: no usable OpenMP
        return False, f"{type(exc).__name__}: {exc}"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class BuildExt(build_ext):
    def run(self):
        # Cythonize here, not at setup() time, so that egg_info and sdist (metadata,
        # source archive) neither need Cython nor write generated C into the tree.
        # Keep setuptools' own Extension objects (finalize_options set them up) and
        # give them the generated C sources, as Cython's build_ext does.
        for ext, cext in zip(self.extensions, cythonize_extensions(self.extensions)):
            assert ext.name == cext.name, (ext.name, cext.name)
            ext.sources = cext.sources
        super().run()

    def build_extensions(self):
        ctype = self.compiler.compiler_type
        use_omp, why = False, "disabled by FASTRNN_NO_OPENMP"
        if not _flag("FASTRNN_NO_OPENMP"):
            use_omp, why = probe_openmp(self.compiler)
        if not use_omp and _flag("FASTRNN_REQUIRE_OPENMP"):
            raise RuntimeError(f"FASTRNN_REQUIRE_OPENMP is set but OpenMP is unusable: {why}")
        print(f"fastrnn: OpenMP {'enabled' if use_omp else 'disabled'}"
              + ("" if use_omp else f" ({why}); building serial kernels"))
        debug = _flag("FASTRNN_DEBUG") or bool(os.environ.get("FASTRNN_SANITIZE"))
        sanitize = os.environ.get("FASTRNN_SANITIZE", "").strip()
        for ext in self.extensions:
            cflags, ldflags = _openmp_flags(ctype) if use_omp else ([], [])
            if ctype == "msvc":
                cflags = cflags + ["/O2"]
            elif debug:
                cflags = cflags + ["-O0", "-g", "-UNDEBUG", "-fno-omit-frame-pointer"]
            else:
                # -fno-math-errno lets gcc inline/vectorise libm calls; no CPU-specific -march flag
                # (the hot loops pick AVX-512/AVX2/SSE2 at load time instead).
                cflags = cflags + ["-O3", "-fno-math-errno"]
            if sanitize and ctype != "msvc":
                cflags = cflags + [f"-fsanitize={sanitize}"]
                ldflags = ldflags + [f"-fsanitize={sanitize}"]
            ext.extra_compile_args = cflags
            ext.extra_link_args = ldflags
            ext.define_macros = list(ext.define_macros or []) + [
                ("FASTRNN_OPENMP", "1" if use_omp else "0")]
        super().build_extensions()


def extensions():
    """Every csrc/NAME.pyx becomes the module fastrnn.NAME (cythonized by BuildExt)."""
    here = os.path.dirname(os.path.abspath(__file__))
    pyx = sorted(f for f in os.listdir(os.path.join(here, "csrc")) if f.endswith(".pyx"))
    return [Extension(f"fastrnn.{f[:-4]}", sources=[f"csrc/{f}"], include_dirs=["csrc"])
            for f in pyx]


def cythonize_extensions(exts):
    from Cython.Build import cythonize

    debug = _flag("FASTRNN_DEBUG") or bool(os.environ.get("FASTRNN_SANITIZE"))
    directives = {
        "language_level": 3,
        "boundscheck": debug,
        "wraparound": False,
        "initializedcheck": debug,
        "cdivision": True,
        "nonecheck": debug,
        "embedsignature": True,
    }
    return cythonize(exts, include_path=["csrc"], compiler_directives=directives)


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})

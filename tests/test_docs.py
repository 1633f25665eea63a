"""The documentation site builds with warnings as errors, offline, and its key pages
are there with their headings, math served locally and the gallery's figures.

One full `sphinx-build -W` (the gallery's plot_* examples run: a few minutes on two
busy cores). Needs the `docs` extra (`pip install -e ".[docs]"`); skipped without
Sphinx, and when the tests run from a copy without the docs/ folder (the installed-
wheel run of tools/check_wheel.sh).
"""
import html
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

pytest.importorskip("sphinx", reason="the docs build needs Sphinx: pip install -e '.[docs]'")
if not (DOCS / "conf.py").is_file():
    pytest.skip("no docs/ beside the tests (an installed-wheel run)", allow_module_level=True)

# page -> its <h1>, as a reader sees it
PAGES = {
    "index.html": "fastrnn",
    "getting-started.html": "Getting started",
    "model.html": "The model",
    "training.html": "Training",
    "generation.html": "Generation",
    "functional-api.html": "The functional API",
    "cli.html": "The fastrnn command",
    "performance.html": "Performance",
    "guarantees.html": "Guarantees",
    "building.html": "Building from source",
    "building-wheels.html": "Building wheels",
    "changelog.html": "Changelog",
    "interop.html": "Interop: PyTorch and ONNX",
    "distributed.html": "Training on several machines",
    "api/generated/fastrnn.train.dist.make_dist.html": "fastrnn.train.dist.make_dist",
    "api/generated/fastrnn.train.dist.MPIDist.html": "fastrnn.train.dist.MPIDist",
    "api/generated/fastrnn.train.dist.SingleProcess.html": "fastrnn.train.dist.SingleProcess",
    "api/generated/fastrnn.train.dist.split_rows.html": "fastrnn.train.dist.split_rows",
    "api/index.html": "API reference",
    "api/generated/fastrnn.CharLM.html": "fastrnn.CharLM",
    "api/generated/fastrnn.Vocab.html": "fastrnn.Vocab",
    "api/generated/fastrnn.init_params.html": "fastrnn.init_params",
    "api/generated/fastrnn.forward.html": "fastrnn.forward",
    "api/generated/fastrnn.loss_and_grad.html": "fastrnn.loss_and_grad",
    "api/generated/fastrnn.build_info.html": "fastrnn.build_info",
    "api/generated/fastrnn.default_num_threads.html": "fastrnn.default_num_threads",
    "api/generated/fastrnn.TrainingDiverged.html": "fastrnn.TrainingDiverged",
    "api/generated/fastrnn.TrainingInterrupted.html": "fastrnn.TrainingInterrupted",
    "api/generated/fastrnn.datasets.html": "fastrnn.datasets",
    "api/generated/fastrnn.reference.html": "fastrnn.reference",
    "api/generated/fastrnn.checkpoint.html": "fastrnn.checkpoint",
    "api/generated/fastrnn.params.html": "fastrnn.params",
    "api/generated/fastrnn.export.html": "fastrnn.export",
    "api/generated/fastrnn.ModelConfig.html": "fastrnn.ModelConfig",
    "api/generated/fastrnn.TrainConfig.html": "fastrnn.TrainConfig",
    "api/generated/fastrnn.train.Trainer.html": "fastrnn.train.Trainer",
    "api/generated/fastrnn.to_torch_state_dict.html": "fastrnn.to_torch_state_dict",
    "api/generated/fastrnn.from_torch_state_dict.html": "fastrnn.from_torch_state_dict",
    "auto_examples/index.html": "Examples",
    "auto_examples/plot_d2l_time_machine.html": "d2l’s char-RNN on The Time Machine",
    "auto_examples/plot_tiny_shakespeare.html": "Tiny Shakespeare",
    "auto_examples/plot_gradient_norms.html": "Gradients through long sequences",
}


def _text(fragment):
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", fragment)).split()).rstrip("#").strip()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("html")
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(out / ".doctrees"), str(DOCS), str(out)],
        # not from the repository root: `python -m` puts the working directory first on
        # sys.path, and the source tree's fastrnn/ (no compiled kernels after a plain
        # `pip install .`) would shadow the installed package the docs must document
        cwd=out, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"sphinx-build -W failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return out


def test_key_pages_have_their_headings(site):
    missing = [p for p in PAGES if not (site / p).is_file()]
    assert not missing, f"pages not built: {missing}"
    for page, title in PAGES.items():
        h1 = re.search(r"<h1[^>]*>(.*?)</h1>", (site / page).read_text(encoding="utf-8"), re.S)
        assert h1 is not None, f"{page} has no <h1>"
        assert _text(h1.group(1)) == title, f"{page}: <h1> is {_text(h1.group(1))!r}"


def test_math_is_served_locally_and_nothing_remote_is_loaded(site):
    model = (site / "model.html").read_text(encoding="utf-8")
    assert 'src="_static/mathjax/tex-chtml.js"' in model
    assert (site / "_static/mathjax/tex-chtml.js").is_file()
    assert (site / "_static/mathjax/output/chtml/fonts/woff-v2").is_dir()
    assert r"\phi" in model and "math notranslate" in model
    remote = re.compile(r"<(?:script|link|img|iframe)\b[^>]*(?:src|href)=\"(?:https?:)?//", re.I)
    for page in site.rglob("*.html"):
        m = remote.search(page.read_text(encoding="utf-8"))
        assert m is None, f"{page.relative_to(site)} loads a remote resource: {m.group(0)}"


def test_readme_sections_are_included_not_copied(site):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    guarantees = readme.split("## Guarantees", 1)[1].split("<!-- end-guarantees -->", 1)[0]
    first_words = " ".join(re.sub(r"[`*\[\]]", "", guarantees).split()[:6])
    page = _text((site / "guarantees.html").read_text(encoding="utf-8"))
    assert first_words in page
    started = _text((site / "getting-started.html").read_text(encoding="utf-8"))
    for marker in ("<!-- main-command -->", "<!-- test-command -->"):
        command = readme.split(marker, 1)[1].split("\n")[2]       # as .ci/run reads it
        assert " ".join(command.split()) in started, f"{marker} command not on the page"


def test_gallery_examples_ran_and_drew_their_figures(site):
    for name in ("plot_d2l_time_machine", "plot_tiny_shakespeare", "plot_gradient_norms"):
        page = (site / f"auto_examples/{name}.html").read_text(encoding="utf-8")
        assert f"sphx_glr_{name}_001.png" in page, f"{name}: no figure"
        assert (site / f"_images/sphx_glr_{name}_001.png").is_file()
        assert "sphx-glr-script-out" in page, f"{name}: no captured output"
    perf = (site / "performance.html").read_text(encoding="utf-8")
    assert "throughput_vs_hidden.png" in perf
    assert (site / "_images/throughput_vs_hidden.png").is_file()

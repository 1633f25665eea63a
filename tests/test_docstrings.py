"""The examples in the public docstrings run, against the imported fastrnn with its
compiled kernels (the package that pytest imports: the installed wheel in
tools/check_wheel.sh, the editable install in development).

Every docstring of the public modules that has a ``>>>`` example is one test, so
examples added later (for instance to the functional API's docstrings) are run
without touching this file.
"""
import doctest
import importlib

import numpy as np
import pytest

import fastrnn

MODULES = ["fastrnn", "fastrnn._core", "fastrnn.model", "fastrnn.vocab", "fastrnn.datasets",
           "fastrnn.checkpoint", "fastrnn.reference", "fastrnn.cli", "fastrnn.params",
           "fastrnn.config", "fastrnn.export", "fastrnn.train.trainer",
           "fastrnn.train.dist"]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _collect():
    finder = doctest.DocTestFinder(exclude_empty=True)
    found = {}
    for modname in MODULES:
        module = importlib.import_module(modname)
        for test in finder.find(module, modname):
            if test.examples and test.name not in found:
                found[test.name] = test
    return [found[k] for k in sorted(found)]


DOCTESTS = _collect()


def test_doctests_run_with_the_compiled_kernels():
    info = fastrnn.build_info()
    assert info["compiled"], f"fastrnn's kernels did not import: {info.get('import_error')}"
    assert len(DOCTESTS) >= 10, [t.name for t in DOCTESTS]


@pytest.mark.parametrize("test", DOCTESTS, ids=[t.name for t in DOCTESTS])
def test_docstring_examples(test, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)           # examples that write files write them here
    test.globs = dict(test.globs, np=np, fastrnn=fastrnn)
    out = []
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    runner.run(test, out=out.append, clear_globs=True)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, "".join(out)

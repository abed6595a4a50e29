"""Op registration, opcheck, torch.compile, and clear errors on bad input."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sfvq_ext
from sfvq_ext import _C
from conftest import requires_cuda

OPS = ["project", "nearest", "decode", "expand"]


def opcheck_cases():
    x = torch.randn(6, 5)
    c = torch.randn(8, 5)
    return [
        (torch.ops.sfvq.project.default, (x, c, "exact")),
        (torch.ops.sfvq.project.default, (x.reshape(2, 3, 5), c, "vertex")),
        (torch.ops.sfvq.project.default, (x.double(), c.double(), "exact")),
        (torch.ops.sfvq.nearest.default, (x, c)),
        (torch.ops.sfvq.decode.default, (torch.rand(2, 3) * 7, c)),
        (torch.ops.sfvq.expand.default, (c, 0.01)),
    ]


@pytest.mark.parametrize("op,args", opcheck_cases())
def test_opcheck(op, args):
    torch.library.opcheck(op, args)


def test_torch_compile():
    @torch.compile(fullgraph=True, backend="aot_eager")
    def quantize(x, c):
        r = sfvq_ext.project(x, c)
        return r.point * 2, r.coord + 1

    x, c = torch.randn(10, 4), torch.randn(6, 4)
    point, coord = quantize(x, c)
    r = sfvq_ext.project(x, c)
    assert torch.equal(point, r.point * 2) and torch.equal(coord, r.coord + 1)


def test_cuda_kernels_registered_exactly_when_built_and_torch_has_cuda():
    # The CUDA kernels are a separate module: a CUDA-enabled build runs its CPU ops
    # under a CPU-only torch, and build_info() says why CUDA is not registered.
    info = sfvq_ext.build_info()
    assert info["cuda_kernels"] == (_C.cuda_built and torch.version.cuda is not None)
    assert (info["cuda_kernels_missing_because"] is None) == info["cuda_kernels"]
    for op in OPS + ["dithered_quantize"]:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"sfvq::{op}", "CPU")
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"sfvq::{op}", "CUDA") == info["cuda_kernels"]


def test_importing_a_tree_without_the_extension_says_where_and_what_to_do(tmp_path):
    """Python started in a clone after a non-editable install imports the clone's
    sources, which hold no compiled _C: the error names the source tree and the way
    out, where Python's own message blamed a circular import. Outside a clone it
    says to reinstall. (The package is copied under another name, so that the
    installed sfvq_ext cannot answer the import.)"""
    init = Path(sfvq_ext.__file__).read_text()
    for in_clone, words in ((True, ["source tree", "another directory", "setup.sh"]), (False, ["reinstall"])):
        root = tmp_path / ("clone" if in_clone else "site")
        (root / "copied").mkdir(parents=True)
        (root / "copied" / "__init__.py").write_text(init)
        if in_clone:
            (root / "pyproject.toml").write_text("")
        run = subprocess.run([sys.executable, "-c", "import copied"], cwd=root, capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == 1, run.stderr
        last = run.stderr.strip().splitlines()[-1]
        assert last.startswith("ImportError:") and str(root / "copied") in last, last
        assert all(w in last for w in words) and "circular" not in run.stderr, last


@requires_cuda
def test_cuda_decode_expand_match_cpu():
    c = torch.randn(16, 7)
    u = torch.rand(100) * 15
    torch.testing.assert_close(sfvq_ext.decode(u.cuda(), c.cuda()).cpu(), sfvq_ext.decode(u, c))
    torch.testing.assert_close(sfvq_ext.expand(c.cuda()).cpu(), sfvq_ext.expand(c))


# ---------------------------------------------------------------------------
# Bad input: the error type, and a message naming the argument.

C = torch.randn(8, 4)


@pytest.mark.parametrize(
    "call,error,words",
    [
        (lambda: sfvq_ext.project(torch.randn(5, 3), C), ValueError, ["x", "(..., D)", "D = 4"]),
        (lambda: sfvq_ext.project(torch.randn(5, 4), C[:1]), ValueError, ["codebook", "at least 2"]),
        (lambda: sfvq_ext.project(torch.randn(5, 4), torch.randn(4)), ValueError, ["codebook", "2-D"]),
        (lambda: sfvq_ext.project(torch.randn(5, 4), C.double()), TypeError, ["same dtype", "x", "codebook"]),
        (lambda: sfvq_ext.project(torch.ones(5, 4, dtype=torch.long), C), TypeError, ["x", "floating-point"]),
        (lambda: sfvq_ext.project(torch.randn(5, 4), C.long()), TypeError, ["codebook", "floating-point"]),
        (lambda: sfvq_ext.project(torch.randn(5, 4), C.clone().fill_(float("nan"))), ValueError, ["codebook", "NaN"]),
        (lambda: sfvq_ext.project(torch.randn(5, 4), torch.cat([C, torch.full((1, 4), float("inf"))])), ValueError, ["codebook", "Inf"]),
        (lambda: sfvq_ext.project(torch.randn(5, 4), C, mode="nearest"), ValueError, ["mode", "exact", "vertex"]),
        (lambda: sfvq_ext.project(torch.randn(5, 4).numpy(), C), TypeError, ["x", "torch.Tensor"]),
        (lambda: sfvq_ext.project(torch.randn(5, 4), torch.empty(8, 0)), ValueError, ["codebook", "D >= 1"]),
        (lambda: sfvq_ext.nearest(torch.randn(5, 4), torch.empty(0, 4)), ValueError, ["points", "at least 1"]),
        (lambda: sfvq_ext.nearest(torch.randn(5, 2), C), ValueError, ["x", "D = 4"]),
        (lambda: sfvq_ext.decode(torch.tensor([0.5, float("nan")]), C), ValueError, ["coord", "NaN"]),
        (lambda: sfvq_ext.decode(torch.tensor([1, 2]), C), TypeError, ["coord", "floating-point"]),
        (lambda: sfvq_ext.expand(C, eps=0.5), ValueError, ["eps", "(0, 0.5)"]),
        (lambda: sfvq_ext.expand(C, eps=0.0), ValueError, ["eps"]),
        (lambda: sfvq_ext.expand(C[:1]), ValueError, ["codebook", "at least 2"]),
        (lambda: sfvq_ext.init_codebook(torch.randn(3, 4)), ValueError, ["sample", "n >= 4"]),
        (lambda: sfvq_ext.init_codebook(torch.ones(8, 4, dtype=torch.int32)), TypeError, ["sample", "floating-point"]),
    ],
)
def test_bad_input(call, error, words):
    with pytest.raises(error) as info:
        call()
    for w in words:
        assert w in str(info.value), (w, str(info.value))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("op", ["project", "nearest"])
def test_non_finite_input_rows_raise(bad, op):
    # Policy: a NaN or Inf anywhere in x raises ValueError naming the first bad row.
    x = torch.randn(2, 300, 4)
    x[1, 7, 2] = bad
    with pytest.raises(ValueError, match=r"x contains NaN or Inf \(first at row 307"):
        getattr(sfvq_ext, op)(x, C)

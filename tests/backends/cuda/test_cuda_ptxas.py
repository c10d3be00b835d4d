"""Static resources of the CUDA kernels (benchmarks/cuda_ptxas.py, ``nvcc -Xptxas -v``):
the parser on a fixed log, and, where nvcc exists (CI builds the extension with it),
every kernel compiled for sm_80 and sm_90 without spills, within 255 registers, and
the tensor-core forward within the opt-in shared memory of an H100/H200 at d = C = 256.
Needs no GPU."""
import importlib.util

import pytest
import repo_paths

ROOT = repo_paths.ROOT
_spec = importlib.util.spec_from_file_location("cuda_ptxas", ROOT / "benchmarks" / "cuda_ptxas.py")
ptxas = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ptxas)

LOG = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_ZN5ggnet4cuda12_GLOBAL__N_112qgrad_kernelIfEEvPKfNS0_12SpatialSizesE' for 'sm_90'
ptxas info    : Function properties for _ZN5ggnet4cuda12_GLOBAL__N_112qgrad_kernelIfEEvPKfNS0_12SpatialSizesE
    8 bytes stack frame, 20 bytes spill stores, 8 bytes spill loads
ptxas info    : Used 128 registers, used 1 barriers, 8 bytes cumulative stack size, 41344 bytes smem
ptxas info    : Compile time = 404.958 ms
ptxas info    : Compiling entry function '_ZN5ggnet4cuda50_GLOBAL__N__19a9b1d1_17_spatial_fwd_tc_cu_e8fdb6dd19spatial_wmma_kernelI13__nv_bfloat16Lb1ELi1EEEvPKT_S6_S6_S6_S6_PKfPfS9_NS0_12SpatialSizesE' for 'sm_90'
ptxas info    : Function properties for _ZN5ggnet4cuda50_GLOBAL__N__19a9b1d1_17_spatial_fwd_tc_cu_e8fdb6dd19spatial_wmma_kernelI13__nv_bfloat16Lb1ELi1EEEvPKT_S6_S6_S6_S6_PKfPfS9_NS0_12SpatialSizesE
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 80 registers, used 1 barriers, 488 bytes cmem[0]
"""


def test_parser_reads_every_field():
    rows = ptxas.parse_ptxas(LOG, "x.cu")
    assert [r["registers"] for r in rows] == [128, 80]
    assert (rows[0]["spill_stores"], rows[0]["spill_loads"], rows[0]["stack_bytes"]) == (20, 8, 8)
    assert rows[0]["static_smem"] == 41344 and rows[1]["static_smem"] == 0
    assert all(r["arch"] == "90" and r["source"] == "x.cu" for r in rows)
    if ptxas.shutil.which("c++filt"):
        assert rows[0]["kernel"] == "qgrad_kernel<float>"
        assert rows[1]["kernel"] == "spatial_wmma_kernel<__nv_bfloat16, true, 1>"


def test_occupancy_arithmetic():
    # 4 row blocks x 2 halves: mv, e (per row block), scr (per warp), red at d = dg = C = 256
    assert ptxas.wmma_forward_smem(256, 256, 256, stats=False) == 192 * 1024
    assert ptxas.blocks_per_sm(168, 256, 192 * 1024, "90") == 1
    assert ptxas.blocks_per_sm(254, 128, 182 * 1024, "90") == 1
    assert ptxas.blocks_per_sm(254, 128, 70 * 1024, "90") == 2
    assert ptxas.blocks_per_sm(80, 128, 28 * 1024, "90") == 6  # registers: 65536 // 10240


@pytest.mark.skipif(ptxas.nvcc_path() is None, reason="needs nvcc (CUDA_HOME or PATH)")
@pytest.mark.parametrize("arch", ["80", "90"])
def test_kernels_do_not_spill(arch):
    rows = ptxas.compile_report(arch)
    names = {r["kernel"] for r in rows}
    assert {"spatial_stats_kernel<float>", "qgrad_kernel<__half>",
            "kside_kernel<__nv_bfloat16, true>", "spatial_wmma_kernel<__nv_bfloat16, false, 8>",
            "channel_outer_kernel"} <= names \
        or not ptxas.shutil.which("c++filt")
    bad = [(r["kernel"], r["spill_stores"], r["spill_loads"]) for r in rows
           if r["spill_stores"] or r["spill_loads"] or r["registers"] > 255]
    assert not bad, f"kernels that spill on sm_{arch}: {bad}"
    fwd = {o["d"]: o for o in ptxas.occupancy_rows(rows, arch) if ", false, 8>" in o["kernel"]}
    if arch == "90":
        assert fwd[256]["dynamic_smem"] <= 227 * 1024 and fwd[256]["blocks_per_sm"] >= 1

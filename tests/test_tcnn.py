"""tiny-cuda-nn as the hash grid's backend (``grid.backend = "tcnn"``): the GPU tests run only where a CUDA device
and tinycudann are present; without them a user gets one line before anything runs."""

import pytest
import torch

from fieldstudio.api import Request, fit_job, resolve
from fieldstudio.errors import FieldStudioError

HAVE_TCNN = torch.cuda.is_available()
if HAVE_TCNN:
    try:
        import tinycudann  # noqa: F401
    except ImportError:
        HAVE_TCNN = False


@pytest.mark.skipif(HAVE_TCNN, reason="tiny-cuda-nn is available here")
def test_without_tiny_cuda_nn_the_backend_is_one_clear_error(sphere_file):
    with pytest.raises(FieldStudioError, match=r'grid.backend = "tcnn" needs (a CUDA GPU|tiny-cuda-nn: pip install)'):
        resolve(Request(sphere_file, steps=10, overrides={"field.grid.backend": "tcnn"}))
    with pytest.raises(FieldStudioError, match="fieldstudio or tcnn"):
        resolve(Request(sphere_file, steps=10, overrides={"field.grid.backend": "tcnm"}))


@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_TCNN, reason="needs a CUDA device and tinycudann")
def test_tcnn_grid_trains_a_field_and_keeps_the_layout(sphere_file, tmp_path):
    from fieldstudio.encoders.tcnn_grid import TcnnHashGrid

    grid = TcnnHashGrid(3, 8, 2, 16, 512, 15).cuda()
    x = torch.rand(1000, 3, device="cuda") * 2.4 - 1.2  # some outside the box: clamped
    out = grid(x)
    assert out.shape == (1000, 16) and out.dtype == torch.float32
    out.square().sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in grid.parameters())
    request = Request(sphere_file, field="hybrid", steps=150, resolution=64,
                      overrides={"field.grid.backend": "tcnn", "train.device": "cuda"})
    result = fit_job(request, tmp_path / "run").run()
    assert result.finished and result.metrics["iou"] > 0.8
    # no conversion between the backends: the built-in grid refuses the tcnn field's weights (other names, shapes)
    import copy

    from fieldstudio.field import Field

    cfg = copy.deepcopy(result.config.field)
    cfg.grid.backend = "fieldstudio"
    state = torch.load(tmp_path / "run" / "checkpoint.pt", map_location="cpu", weights_only=False)["field"]
    with pytest.raises(RuntimeError):
        Field(cfg).load_state_dict(state)

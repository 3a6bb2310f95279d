"""Shared map post-processing."""

import numpy as np
import torch
from scipy import ndimage

from unified_anomaly.models.postprocess import gaussian_smooth


def test_gaussian_smoothing_matches_scipy_and_commutes_with_affine_maps():
    maps = torch.rand(2, 40, 50)
    smoothed = gaussian_smooth(maps, 2.0)
    reference = np.stack([ndimage.gaussian_filter(m.numpy().astype(np.float64), 2.0, mode="mirror") for m in maps])
    np.testing.assert_allclose(smoothed.numpy(), reference, atol=1e-5)
    a, b = torch.tensor([2.0, 0.5]).view(2, 1, 1), torch.tensor([-1.0, 3.0]).view(2, 1, 1)
    assert torch.allclose(gaussian_smooth(a * maps + b, 2.0), a * smoothed + b, atol=1e-5)
    assert torch.equal(gaussian_smooth(maps, 0.0), maps)

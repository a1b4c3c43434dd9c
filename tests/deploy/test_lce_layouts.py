"""LCE export of layouts the other LCE tests never meet (mutation survivors of tools/mutate.py): a
feature vector viewed as an image (torch's NCHW order turned into TFLite's NHWC by a TRANSPOSE, or by
a RESHAPE where the bytes agree), and a shared-slope PReLU (``nn.PReLU()``: one slope for every
channel) on an image and on a (batch, tokens, features) tensor, whose slope is spread over the channel
axis of each layout. Compared with PyTorch through LCE's interpreter."""

import pytest
import torch
from torch import nn

from onebit.deploy import lce

pytestmark = pytest.mark.skipif(not lce.LCE_PLATFORM,
                                reason="larq-compute-engine ships its interpreter for x86-64 Linux only")


class VectorToImage(nn.Module):
    """(N, C·H·W) → Linear → view as (N, C, H, W) → conv to 5 channels → shared-slope PReLU → flatten →
    linear. The conv's 5 channels differ from H, W and the batch, so a slope spread over the wrong axis
    cannot pass."""

    def __init__(self, c, h, w):
        super().__init__()
        self.chw = (c, h, w)
        self.fc = nn.Linear(c * h * w, c * h * w)
        self.conv = nn.Conv2d(c, 5, 3, padding=1)
        self.act = nn.PReLU(init=0.2)
        self.head = nn.Linear(5 * h * w, 7)

    def forward(self, x):
        y = self.fc(x).view(x.shape[0], *self.chw)
        return self.head(self.act(self.conv(y)).flatten(1))


def tokens():
    """(N, T=3, F=6) → Linear to 5 features → shared-slope PReLU → Linear to 2 (T, F and widths differ)."""
    return nn.Sequential(nn.Linear(6, 5), nn.PReLU(init=0.3), nn.Linear(5, 2))


def check(net, x):
    net.eval()
    with torch.no_grad():
        want = net(x)
    interp = lce.interpreter(lce.to_lce_bytes(net, x))
    got = torch.from_numpy(interp.predict(x.numpy())[0])
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-5 * want.abs().max().item()


# (C, H, W) of the view: general (TRANSPOSE); square with 2 channels (H/W = 1, C = 2); 2 pixels; 1 channel
# (the same bytes in both orders: a RESHAPE).
@pytest.mark.parametrize("c,h,w", [(4, 2, 3), (2, 3, 3), (3, 1, 2), (1, 2, 3)])
def test_vector_viewed_as_image_matches_pytorch(c, h, w):
    torch.manual_seed(0)
    check(VectorToImage(c, h, w), torch.randn(2, c * h * w, generator=torch.Generator().manual_seed(1)))


def test_shared_slope_prelu_on_tokens_matches_pytorch():
    torch.manual_seed(0)
    check(tokens(), torch.randn(2, 3, 6, generator=torch.Generator().manual_seed(1)))

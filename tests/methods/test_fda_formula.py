"""FDA's formula pieces written out (mutation survivors of tools/mutate.py): the truncated Fourier
series of the square wave, term by term (Xu et al., NeurIPS 2021, Eq. 5), and the noise-adaptation
module's d → d/64 bottleneck (BiBench ``fda.py``)."""

import math

import torch

from onebit.methods.fda import NoiseAdaptation, fourier_sign


def test_fourier_sign_is_the_odd_harmonic_series():
    x = torch.tensor([-2.0, -0.7, -0.1, 0.0, 0.3, 0.8, 1.5], dtype=torch.float64)
    omega = 1.3
    xc = x.clamp(-1, 1)
    for terms in (0, 1, 3):
        want = 4 / math.pi * sum(torch.sin((2 * i + 1) * omega * xc) / (2 * i + 1) for i in range(terms + 1))
        torch.testing.assert_close(fourier_sign(x, terms, omega), want, rtol=1e-12, atol=1e-12)
    # one term: (4/π)·sin(ωx) inside [-1, 1], constant outside
    torch.testing.assert_close(fourier_sign(x, 0, omega), 4 / math.pi * torch.sin(omega * xc))


def test_noise_adaptation_bottleneck_is_one_sixty_fourth():
    for features, hidden in ((128, 2), (126, 1), (640, 10), (8, 1)):  # at least one hidden unit
        module = NoiseAdaptation(features)
        assert (module.fc1.in_features, module.fc1.out_features) == (features, hidden)
        assert (module.fc2.in_features, module.fc2.out_features) == (hidden, features)

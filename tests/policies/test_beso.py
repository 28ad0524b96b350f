"""BESO's EDM preconditioning, noise sampling, sampler and guidance, against the paper's facts."""

import math

import numpy as np
import pytest
import torch

from tether.policies.beso import (
    Beso, edm_coefficients, exponential_schedule, linear_schedule, masked_mse, noise_draws,
    sample_log_logistic,
)
from tether.policies.configs import BesoConfig

SMALL = BesoConfig(d_model=32, n_layers=2, n_heads=2, window=2, dropout=0.0)


def test_edm_coefficients_match_the_formulas():
    s = torch.tensor([0.005, 0.1, 0.5, 1.0])
    sd = 0.5
    c_skip, c_out, c_in, c_noise = edm_coefficients(s, sd)
    torch.testing.assert_close(c_skip, sd**2 / (s**2 + sd**2))
    torch.testing.assert_close(c_out, s * sd / torch.sqrt(s**2 + sd**2))
    torch.testing.assert_close(c_in, 1 / torch.sqrt(s**2 + sd**2))
    torch.testing.assert_close(c_noise, torch.log(s) / 4)
    # unit variance of the network's input and target when the data has std sigma_data
    torch.testing.assert_close(c_in**2 * (s**2 + sd**2), torch.ones(4))


def test_log_logistic_noise_levels():
    cfg = BesoConfig()
    sigma = sample_log_logistic(200_000, cfg, torch.Generator().manual_seed(0))
    assert sigma.min() >= cfg.sigma_min and sigma.max() <= cfg.sigma_max
    assert abs(float(sigma.log().median()) - math.log(0.5)) < 0.01  # location ln 0.5
    # the logistic's interquartile range is 2 * scale * ln 3 (before clipping, unaffected here)
    q1, q3 = np.quantile(sigma.log().numpy(), [0.25, 0.75])
    assert abs((q3 - q1) - 2 * 0.5 * math.log(3)) < 0.02


def test_exponential_schedule():
    sig = exponential_schedule(3, 0.005, 1.0)
    assert sig[0] == 1.0 and sig[-1] == 0.0 and math.isclose(sig[2], 0.005)
    assert math.isclose(sig[1], math.sqrt(0.005))  # log-spaced
    assert exponential_schedule(1, 0.005, 1.0) == [1.0, 0.0]
    with pytest.raises(ValueError):
        exponential_schedule(0, 0.005, 1.0)


def test_ddim_with_an_exact_denoiser_returns_the_data():
    """With D(x; s) = x0 the DDIM update lands on x0 after the last step, for any noise."""
    model = Beso(SMALL, obs_dim=3, action_dim=2, goal_dim=2)
    x0 = torch.tensor([[[0.3, -0.2], [0.1, 0.4]]])
    model.guided_denoise = lambda x, sigma, obs, goal: x0.expand_as(x)
    out = model.sample(torch.zeros(1, 2, 3), torch.zeros(1, 2), torch.randn(1, 2, 2))
    torch.testing.assert_close(out, x0)


def test_ddim_converges_to_the_probability_flow_for_gaussian_data():
    """For data x0 ~ N(0, sd^2) the ideal denoiser is D(x; s) = sd^2 / (s^2 + sd^2) x, and the
    probability-flow ODE maps x(s_max) to x(0) = x * sd / sqrt(s_max^2 + sd^2). DDIM is a
    first-order solver of that ODE: its error must shrink as the steps grow."""
    noise = torch.randn(8, 1, 1, generator=torch.Generator().manual_seed(0))
    errors = []
    for steps in (25, 400):
        cfg = BesoConfig(window=1, num_steps=steps, sigma_min=1e-4)
        model = Beso(cfg, 1, 1, 1)
        sd = cfg.sigma_data
        model.guided_denoise = lambda x, sigma, obs, goal: (sd**2 / (sigma**2 + sd**2)).view(-1, 1, 1) * x
        out = model.sample(torch.zeros(8, 1, 1), torch.zeros(8, 1), noise)
        expected = noise * cfg.sigma_max * sd / math.sqrt(cfg.sigma_max**2 + sd**2)
        errors.append(float(((out - expected) / expected).abs().max()))
    assert errors[1] < 0.01
    assert errors[1] < errors[0] / 8  # 16x more steps: first-order error shrinks ~16x


def test_guidance_combines_conditional_and_unconditional():
    torch.manual_seed(0)
    model = Beso(BesoConfig(**{**SMALL.__dict__, "guidance_weight": 1.5}), 3, 2, 2).eval()
    x, sigma = torch.randn(4, 2, 2), torch.full((4,), 0.3)
    obs, goal = torch.randn(4, 2, 3), torch.eye(2)[[0, 1, 0, 1]]
    with torch.no_grad():
        d_c = model.denoise(x, sigma, obs, goal)
        d_u = model.denoise(x, sigma, obs, torch.zeros_like(goal))
        guided = model.guided_denoise(x, sigma, obs, goal)
    torch.testing.assert_close(guided, d_u + 1.5 * (d_c - d_u))


def test_goal_dropout_rate_in_training():
    """The loss zeroes the goal of ~10% of the samples (classifier-free guidance training)."""
    model = Beso(SMALL, 3, 2, 4)
    seen = []
    original = model.net.forward

    def spy(x, c_noise, obs, goal):
        seen.append(goal)
        return original(x, c_noise, obs, goal)

    model.net.forward = spy
    goal = torch.ones(20_000, 4)
    model.loss(torch.zeros(20_000, 2, 3), torch.zeros(20_000, 2, 2), goal, torch.Generator().manual_seed(1))
    dropped = float((seen[0].sum(1) == 0).float().mean())
    assert abs(dropped - 0.1) < 0.01


def test_causal_mask_action_does_not_see_the_future():
    torch.manual_seed(0)
    model = Beso(SMALL, 3, 2, 2).eval()
    x, obs = torch.randn(1, 2, 2), torch.randn(1, 2, 3)
    goal, sigma = torch.eye(2)[[0]], torch.tensor([0.5])
    with torch.no_grad():
        a = model.denoise(x, sigma, obs, goal)
        obs2 = obs.clone()
        obs2[0, 1] += 1.0  # change only the last observation
        b = model.denoise(x, sigma, obs2, goal)
    torch.testing.assert_close(a[0, 0], b[0, 0])  # the first action cannot see it
    assert not torch.allclose(a[0, 1], b[0, 1])


def test_loss_decreases_on_a_learnable_problem():
    torch.manual_seed(0)
    model = Beso(SMALL, 3, 2, 2)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    obs = torch.randn(256, 2, 3)
    actions = torch.tanh(obs[..., :2])  # actions are a function of the observation
    goal = torch.eye(2)[torch.randint(0, 2, (256,))]
    gen = torch.Generator().manual_seed(0)
    first = model.loss(obs, actions, goal, gen).item()
    for _ in range(300):
        loss = model.loss(obs, actions, goal, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert model.loss(obs, actions, goal, gen).item() < 0.5 * first


def test_linear_schedule_and_bad_settings():
    assert linear_schedule(3, 0.005, 1.0) == pytest.approx([1.0, 0.5025, 0.005, 0.0])
    with pytest.raises(ValueError, match="schedule"):
        Beso(BesoConfig(**{**SMALL.__dict__, "schedule": "cosine"}), 3, 2, 2)
    with pytest.raises(ValueError, match="sampler"):
        Beso(BesoConfig(**{**SMALL.__dict__, "sampler": "heun"}), 3, 2, 2)


@pytest.mark.parametrize("sampler", ["ddim", "euler_ancestral"])
def test_samplers_with_an_exact_denoiser_return_the_data(sampler):
    cfg = BesoConfig(**{**SMALL.__dict__, "sampler": sampler, "num_steps": 5})
    model = Beso(cfg, obs_dim=3, action_dim=2, goal_dim=2)
    x0 = torch.tensor([[[0.3, -0.2], [0.1, 0.4]]])
    model.guided_denoise = lambda x, sigma, obs, goal: x0.expand_as(x)
    noise = torch.randn(1, noise_draws(cfg) * 2, 2)
    torch.testing.assert_close(model.sample(torch.zeros(1, 2, 3), torch.zeros(1, 2), noise), x0)
    assert noise_draws(cfg) == (6 if sampler == "euler_ancestral" else 1)


def test_euler_ancestral_samples_the_gaussian_data_distribution():
    """With the ideal denoiser of N(0, sd^2) data, Euler-ancestral's samples have std ~sd: its
    fresh noise keeps the marginals right (a deterministic sampler of few steps shrinks them)."""
    cfg = BesoConfig(window=1, num_steps=200, sigma_min=1e-3, sigma_max=20.0, sampler="euler_ancestral")
    model = Beso(cfg, 1, 1, 1)
    sd = cfg.sigma_data
    model.guided_denoise = lambda x, sigma, obs, goal: (sd**2 / (sigma**2 + sd**2)).view(-1, 1, 1) * x
    n = 4000
    noise = torch.randn(n, noise_draws(cfg), 1, generator=torch.Generator().manual_seed(0))
    out = model.sample(torch.zeros(n, 1, 1), torch.zeros(n, 1), noise)
    assert abs(float(out.std()) - sd) < 0.03


def test_action_chunks_predict_the_future_from_the_last_observation():
    cfg = BesoConfig(**{**SMALL.__dict__, "window": 2, "action_horizon": 4})
    torch.manual_seed(0)
    model = Beso(cfg, 3, 2, 2).eval()
    x, obs = torch.randn(1, 5, 2), torch.randn(1, 2, 3)  # L = T + H - 1 = 5
    goal, sigma = torch.eye(2)[[0]], torch.tensor([0.5])
    with torch.no_grad():
        a = model.denoise(x, sigma, obs, goal)
        x2 = x.clone()
        x2[0, 4] += 1.0  # the last future action
        b = model.denoise(x2, sigma, obs, goal)
    assert a.shape == (1, 5, 2)
    torch.testing.assert_close(a[0, :4], b[0, :4])  # causal: earlier actions cannot see it
    out = model.sample(obs, goal, torch.randn(1, 5, 2))
    assert out.shape == (1, 5, 2)


def test_masked_loss_ignores_padded_actions():
    pred, target = torch.zeros(2, 3, 1), torch.ones(2, 3, 1)
    target[:, 2] = 100.0  # past the episode's end
    pad = torch.tensor([[False, False, True], [False, False, True]])
    assert float(masked_mse(pred, target, pad)) == 1.0
    assert float(masked_mse(pred, target, None)) > 1000

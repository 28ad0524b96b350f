"""ICVF: the multilinear value, reward and intent-weighted expectile on hand-made tensors, the loss
against a by-hand recomputation, Polyak targets, transitions and goals within episodes, and the
pre-trained encoder loaded into IQL (equal weights, frozen = no gradient, precise mismatch errors)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tether.policies.configs import IcvfConfig, IqlConfig
from tether.policies.frames import FrameEpisodes, icvf_batches
from tether.policies.icvf import Icvf, MultilinearHead, icvf_reward, intent_expectile_loss, multilinear_value
from tether.policies.iql import Iql
from tether.policies.pretrained_encoder import EncoderInitError, init_image_encoders, load_encoder, save_encoder
from tether.policies.sampling import GoalSampler

SMALL = IcvfConfig(channels=(4, 8), feature_dim=16, latent_dim=4, hidden=(8,))


pytestmark = pytest.mark.usefixtures("one_thread")


def frames(b: int, seed: int, size: int = 16) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (b, size, size, 3), dtype=np.uint8))


def test_defaults_are_icvf_and_v_ptr_settings():
    cfg = IcvfConfig()
    assert (cfg.expectile, cfg.discount, cfg.tau) == (0.9, 0.99, 0.005)
    icvf = GoalSampler.icvf(cfg.discount)
    assert (cfg.p_random, cfg.p_future, cfg.p_current) == (icvf.p_random, icvf.p_future, icvf.p_current)
    assert cfg.channels == IqlConfig().channels and cfg.feature_dim == 64  # transfers to IQL's encoder as is


def test_multilinear_value_is_phi_T_psi():
    phi = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
    t = torch.tensor([[[1.0, 0.0], [0.0, 2.0]], [[0.0, 1.0], [1.0, 0.0]]])
    psi = torch.tensor([[3.0, 4.0], [5.0, 6.0]])
    # [1 2] diag(1, 2) [3 4]^T = 3 + 16; [0 1] [[0 1] [1 0]] [5 6]^T = 5
    torch.testing.assert_close(multilinear_value(phi, t, psi), torch.tensor([19.0, 5.0]))
    head = MultilinearHead(feature_dim=6, hidden=(8,), latent_dim=3)
    fs, fg, fz = torch.randn(3, 2, 6).unbind(0)
    t_z = head.t(head.psi(fz)).view(2, 3, 3)
    by_hand = torch.stack([head.phi(fs)[i] @ t_z[i] @ head.psi(fg)[i] for i in range(2)])
    torch.testing.assert_close(head(fs, fg, fz), by_hand)


def test_reward_is_zero_at_the_goal_and_minus_one_elsewhere_and_the_goal_ends_the_episode():
    reward, mask = icvf_reward(torch.tensor([True, False, False]))
    torch.testing.assert_close(reward, torch.tensor([0.0, -1.0, -1.0]))
    torch.testing.assert_close(mask, torch.tensor([0.0, 1.0, 1.0]))


def test_the_intent_advantage_not_the_error_picks_the_expectile_weight():
    diff = torch.tensor([2.0, -1.0, 3.0, -2.0])
    advantage = torch.tensor([1.0, -1.0, 0.0, 0.5])
    # |0.9 - 1(A < 0)|: 0.9, 0.1, 0.9 (A = 0 is not below 0), 0.9 whatever the error's sign
    expected = (0.9 * 4 + 0.1 * 1 + 0.9 * 9 + 0.9 * 4) / 4
    assert intent_expectile_loss(diff, advantage, 0.9).item() == pytest.approx(expected)
    # all advantages positive: plain squared error scaled by tau, whatever the sign of diff
    assert intent_expectile_loss(diff, torch.ones(4), 0.9).item() == pytest.approx(0.9 * (4 + 1 + 9 + 4) / 4)


def test_loss_matches_the_td_target_and_intent_advantage_computed_by_hand():
    torch.manual_seed(0)
    model = Icvf(SMALL)
    with torch.no_grad():  # a target network that differs from the online one
        for p in model.target.parameters():
            p.add_(0.05 * torch.randn_like(p))
    s, s2, g, z = (frames(5, i) for i in range(4))
    at_goal = torch.tensor([True, False, False, True, False])
    at_intent = torch.tensor([False, True, False, False, False])
    loss = model.loss(s, s2, g, z, at_goal, at_intent)

    enc, tenc = model.encoder, model.target["encoder"]

    def v(heads, e, a, b, c):
        return torch.stack([h(e(a), e(b), e(c)) for h in heads])

    with torch.no_grad():
        heads = model.target["heads"]
        y = (at_goal.float() - 1) + 0.99 * (1 - at_goal.float()) * v(heads, tenc, s2, g, z).min(0).values
        adv = ((at_intent.float() - 1) + 0.99 * (1 - at_intent.float()) * v(heads, tenc, s2, z, z).min(0).values
               - v(heads, tenc, s, z, z).mean(0))
        online = v(model.heads, enc, s, g, z)
        weight = torch.where(adv < 0, 0.1, 0.9)
        by_hand = sum((weight * (y - online[k]) ** 2).mean() for k in range(2))
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert y[0] == 0 and y[3] == 0  # at the goal: reward 0, no bootstrap
    loss.backward()
    assert all(p.grad is None for p in model.target.parameters())
    assert model.encoder.head[0].weight.grad is not None


def test_target_network_follows_by_polyak_averaging():
    model = Icvf(IcvfConfig(channels=(4,), feature_dim=8, latent_dim=2, hidden=(4,), tau=0.1))
    enc_before = model.target["encoder"].head[0].weight.clone()
    head_before = model.target["heads"][1].t[0].weight.clone()
    with torch.no_grad():
        model.encoder.head[0].weight.add_(1.0)
        model.heads[1].t[0].weight.add_(2.0)
    model.after_step()
    torch.testing.assert_close(model.target["encoder"].head[0].weight, enc_before + 0.1)
    torch.testing.assert_close(model.target["heads"][1].t[0].weight, head_before + 0.2)
    assert not any(p.requires_grad for p in model.target.parameters())


def test_value_reads_one_goal_for_a_batch_of_states():
    model = Icvf(SMALL).eval()
    s, g = frames(6, 0), frames(1, 1)
    torch.testing.assert_close(model.value(s, g), model.value(s, g.expand(6, -1, -1, -1)))


def test_batches_are_transitions_within_episodes_with_icvf_goals():
    # pixel value = 10 * episode + t: a frame says where it came from
    lengths = [5, 3, 7]
    episodes = [np.full((n, 4, 4, 3), 10 * e, np.uint8) + np.arange(n, dtype=np.uint8)[:, None, None, None]
                for e, n in enumerate(lengths)]
    data = FrameEpisodes(episodes, ["a", "b", "c"])
    sample = icvf_batches(data, 4000, GoalSampler.icvf(0.99), seed=0)
    batch = sample(0)
    s, s2 = batch["obs"][:, 0, 0, 0].long(), batch["next_obs"][:, 0, 0, 0].long()
    assert torch.equal(s2, s + 1)  # the next frame of the same episode
    last = torch.tensor([10 * e + n - 1 for e, n in enumerate(lengths)])
    assert not torch.isin(s, last).any()  # an episode's last frame starts no transition
    g = batch["goal"][:, 0, 0, 0].long()
    assert torch.equal(batch["at_goal"], g == s)
    same_episode = (g // 10 == s // 10) & (g >= s)
    # 20% current + 50% future in the same episode (+ random frames that land there)
    assert 0.17 < batch["at_goal"].float().mean() < 0.3
    assert 0.7 < same_episode.float().mean() < 0.85
    assert batch["obs"].dtype == torch.uint8 and batch["obs"].shape == (4000, 4, 4, 3)


def pretrained(tmp_path, channels=(4, 8), size=16):
    torch.manual_seed(1)
    model = Icvf(IcvfConfig(channels=channels, feature_dim=64, latent_dim=4, hidden=(8,)))
    path = save_encoder(tmp_path / "encoder.pt", model.encoder, (size, size, 3), {"resize": f"{size}x{size}"},
                        {"method": "ICVF"})
    return model, path


def test_encoder_file_records_architecture_size_and_preprocessing(tmp_path):
    model, path = pretrained(tmp_path)
    payload = load_encoder(path)
    assert payload["channels"] == [4, 8] and payload["out_dim"] == 64 and payload["image_shape"] == [16, 16, 3]
    assert payload["preprocessing"] == {"resize": "16x16"}
    torch.save({"kind": "something else"}, tmp_path / "bad.pt")
    with pytest.raises(EncoderInitError, match="not an image encoder file"):
        load_encoder(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError, match="pretrain-value"):
        load_encoder(tmp_path / "missing.pt")


def test_encoder_init_loads_into_iql_and_frozen_means_no_gradient(tmp_path):
    model, path = pretrained(tmp_path)
    iql = Iql(IqlConfig(hidden=(8,), encoder="image", channels=(4, 8)), 3, 2, 1, camera="cam", image_shape=(16, 16, 3))
    assert init_image_encoders(iql, path, (16, 16, 3), freeze=True) == 2  # online and target copy
    for encoder in (iql.features.encoder, iql.target["features"].encoder):
        for (name, p), q in zip(encoder.state_dict().items(), model.encoder.state_dict().values()):
            torch.testing.assert_close(p, q, msg=name)
    image = frames(4, 5)
    batch = {"obs": torch.randn(4, 1, 3), "actions": torch.rand(4, 2) * 2 - 1, "reward": torch.randn(4),
             "next_obs": torch.randn(4, 1, 3), "done": torch.zeros(4), "goal": torch.ones(4, 1),
             "image": image, "next_image": frames(4, 6)}
    iql.loss(**batch).backward()
    assert all(p.grad is None and not p.requires_grad for p in iql.features.encoder.parameters())
    assert iql.q1[0].weight.grad is not None
    # fine-tuned (not frozen): the encoder learns
    tuned = Iql(IqlConfig(hidden=(8,), encoder="image", channels=(4, 8)), 3, 2, 1, camera="cam", image_shape=(16, 16, 3))
    init_image_encoders(tuned, path, (16, 16, 3), freeze=False)
    tuned.loss(**batch).backward()
    assert tuned.features.encoder.head[0].weight.grad is not None


def test_encoder_init_mismatches_say_what_differs(tmp_path):
    _, path = pretrained(tmp_path)
    iql = Iql(IqlConfig(hidden=(8,), encoder="image"), 3, 2, 1, camera="cam", image_shape=(16, 16, 3))
    with pytest.raises(EncoderInitError, match=r"channels \[4, 8\].*channels \[16, 32, 32, 32\].*--iql.channels 4 8"):
        init_image_encoders(iql, path, (16, 16, 3))
    iql = Iql(IqlConfig(hidden=(8,), encoder="image", channels=(4, 8)), 3, 2, 1, camera="cam", image_shape=(32, 32, 3))
    with pytest.raises(EncoderInitError, match="pre-trained on 16x16 frames but the camera gives 32x32"):
        init_image_encoders(iql, path, (32, 32, 3))
    with pytest.raises(EncoderInitError, match="reads no camera frame; use --iql.encoder image"):
        init_image_encoders(Iql(IqlConfig(hidden=(8,)), 3, 2, 1), path, None)

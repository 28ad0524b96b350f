"""Visuomotor BESO/GCBC: image encoders, training from camera datasets, goals, ONNX export and the
runner feeding frames. The data (``conftest.target_dataset``): a point mass steers to a target that
only the frames show; ``observation.state`` holds the mass's position alone."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tether.policies.configs import BesoConfig, GoalConfig, ObservationConfig, TrainConfig
from tether.policies.export import export_policy, parity
from tether.policies.image_encoders import ImagePreprocess, build_image_encoder
from tether.policies.sequence_data import SequenceData
from tether.policies.visuomotor import VisuomotorPolicy, aux_state_dims, state_dims
from tether.robot.dataset import Dataset, DatasetError
from tether.robot.runner import PolicyRunner
from tether.robot.spec import SpecError

SMALL = BesoConfig(window=2, action_horizon=3, d_model=32, n_layers=1, n_heads=2)
OBS = ObservationConfig(cameras=("cam0", "cam1"), channels=(8, 16), feature_dim=16)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, target_data):
    return target_data.write(tmp_path_factory.mktemp("vm") / "ds")


def build(data: SequenceData, kind: str = "beso", obs: ObservationConfig = OBS, cfg: BesoConfig = SMALL):
    emb = None if data.task_embeddings is None else torch.from_numpy(data.task_embeddings)
    return VisuomotorPolicy(kind, cfg, obs, data.obs_dim, data.action_dim, data.goal_dim,
                            data.camera_shapes, data.goal_camera, emb)


def test_preprocess_random_crop_in_training_centre_crop_otherwise():
    pre = ImagePreprocess((10, 10), None, 0.6, (0.0,) * 3, (1.0,) * 3)
    frames = torch.arange(100, dtype=torch.uint8).view(1, 10, 10, 1).expand(64, 10, 10, 3).contiguous()
    centre = pre.eval()(frames)
    assert centre.shape == (64, 3, 6, 6)
    assert torch.allclose(centre[:, 0, 0, 0] * 255, torch.tensor(22.0))  # row 2, column 2
    crops = pre.train()(frames)
    corners = (crops[:, 0, 0, 0] * 255).round().long()
    rows, cols = corners // 10, corners % 10
    assert rows.max() <= 4 and cols.max() <= 4 and len(set(corners.tolist())) > 5
    # every crop is a contiguous 6x6 window of the frame
    assert torch.equal((crops[:, 0] * 255).round().long(), corners.view(-1, 1, 1) + 10 * torch.arange(6).view(1, 6, 1)
                       + torch.arange(6).view(1, 1, 6))


def test_state_dims_are_checked():
    assert state_dims(ObservationConfig(state_dims=(0, 2)), 3) == (0, 2)
    with pytest.raises(ValueError, match=r"--obs.state-dims \[5\] lie outside observation.state \(3"):
        state_dims(ObservationConfig(state_dims=(0, 5)), 3)
    with pytest.raises(ValueError, match="blind"):
        state_dims(ObservationConfig(state_dims=()), 3)


def test_aux_state_dims_are_checked():
    cams = ObservationConfig(cameras=("cam0",))
    assert aux_state_dims(dataclasses.replace(cams, aux_state_dims=(3, 1)), 4) == (3, 1)
    assert aux_state_dims(ObservationConfig(), 4) == ()
    with pytest.raises(ValueError, match=r"--obs.aux-state-dims \[4\] lie outside observation.state \(4"):
        aux_state_dims(dataclasses.replace(cams, aux_state_dims=(2, 4)), 4)
    with pytest.raises(ValueError, match=r"--obs.aux-state-dims \[2, 2\] repeats"):
        aux_state_dims(dataclasses.replace(cams, aux_state_dims=(2, 2)), 4)
    with pytest.raises(ValueError, match="--obs.aux-state-dims needs --obs.cameras"):
        aux_state_dims(ObservationConfig(aux_state_dims=(2,)), 4)
    with pytest.raises(ValueError, match="--obs.aux-weight must be a finite number >= 0, got nan"):
        aux_state_dims(dataclasses.replace(cams, aux_state_dims=(2,), aux_weight=float("nan")), 4)


@pytest.fixture(scope="module")
def target_in_state(tmp_path_factory, target_data):
    """The target dataset whose state also holds the target (what a simulator knows)."""
    return target_data.write(tmp_path_factory.mktemp("vm_aux") / "ds", target_in_state=True)


def test_aux_pose_regression_teaches_the_camera_features_where_the_target_is(target_in_state, tmp_path, one_thread):
    """The policy reads the position and the frames; the head learns the target (state 2, 3)
    from the camera features, and the exported graph neither holds the head nor reads the target."""
    from tether.policies.train import train

    torch.manual_seed(0)
    obs = dataclasses.replace(OBS, cameras=("cam0",), state_dims=(0, 1), aux_state_dims=(2, 3))
    data = SequenceData.from_dataset(target_in_state, 1, 1, GoalConfig(), obs, cache_dir=tmp_path / "c")
    cfg = dataclasses.replace(SMALL, action_horizon=1, window=1)
    model = build(data, "gcbc", obs, cfg)
    untrained = _aux_error(model, data)
    optim = TrainConfig(steps=150, batch_size=32, warmup_steps=10, lr=2e-3, ema_decay=0.9)
    ema = train(model, data.batches(optim.batch_size), optim).ema
    # normalized targets: predicting their mean errs by about 1
    assert _aux_error(ema, data) < 0.2 < untrained, (_aux_error(ema, data), untrained)

    spec = Dataset(target_in_state).spec
    path = export_policy(ema, data.normalizer, spec, data.tasks, tmp_path / "p.onnx", data.goal_dims)
    assert parity(ema, data.normalizer, spec, path, len(data.tasks), goal_dims=data.goal_dims) <= 1e-4
    import onnx

    graph = onnx.load(path).graph
    assert not [i for i in graph.initializer if "aux_head" in i.name]
    runner = PolicyRunner(path)
    runner.reset(data.tasks[0])
    state = np.array([0.1, 0.2, 0.0, 0.0], np.float32)
    image = np.zeros((32, 32, 3), np.uint8)
    a = runner.act({"observation.state": state, "observation.images.cam0": image})
    runner.reset(data.tasks[0])
    b = runner.act({"observation.state": state + [0, 0, 0.5, -0.5], "observation.images.cam0": image})
    assert np.array_equal(a, b), "the deployed policy must not read the auxiliary targets"


def _aux_error(model: VisuomotorPolicy, data: SequenceData) -> float:
    """Mean squared error of the auxiliary head on a held-out batch (normalized state)."""
    batch = data.batches(256, seed=99)(0)
    model.eval()
    with torch.no_grad():
        frames = [batch["frames"][k] for k in model.encoder.cameras]
        pred = model.predict_aux(model.encoder(batch["obs"], frames))
    return float(((pred - batch["obs"][..., model.aux_dims]) ** 2).mean())


def test_a_camera_the_dataset_lacks_is_named(dataset):
    with pytest.raises(DatasetError, match=r"--obs.cameras: .* has no camera observation.images.wrist "
                                           r"\(its cameras: observation.images.cam0, observation.images.cam1\)"):
        SequenceData.from_dataset(dataset, 2, 1, GoalConfig(), ObservationConfig(cameras=("wrist",)))


def test_an_image_goal_needs_a_camera(dataset):
    with pytest.raises(ValueError, match="--goal.kind image .* give --obs.cameras"):
        SequenceData.from_dataset(dataset, 2, 1, GoalConfig(kind="image"), ObservationConfig())


def test_batches_hold_frame_windows_and_goal_images(dataset, tmp_path):
    data = SequenceData.from_dataset(dataset, 2, 3, GoalConfig(kind="image", image_camera="cam1"), OBS,
                                     cache_dir=tmp_path)
    b = data.batches(8)(0)
    assert b["frames"]["observation.images.cam0"].shape == (8, 2, 32, 32, 3)
    assert b["frames"]["observation.images.cam1"].shape == (8, 2, 24, 32, 3)
    assert b["goal_image"].shape == (8, 24, 32, 3) and b["goal_image"].dtype == torch.uint8
    assert "goal" not in b
    assert data.goal_camera == "observation.images.cam1"


@pytest.mark.parametrize("kind,goal", [("beso", "task"), pytest.param("gcbc", "task", marks=pytest.mark.slow),
                                       pytest.param("beso", "language", marks=pytest.mark.slow), ("gcbc", "image"),
                                       pytest.param("beso", "multimodal", marks=pytest.mark.slow)])
def test_export_parity_and_the_runner_feeds_frames(dataset, tmp_path, kind, goal, one_thread, target_data):
    data = SequenceData.from_dataset(dataset, 2, 3, GoalConfig(kind=goal), OBS, cache_dir=tmp_path / "cache")
    model = build(data, kind).eval()
    spec = Dataset(dataset).spec
    path = export_policy(model, data.normalizer, spec, data.tasks, tmp_path / "p.onnx", data.goal_dims)
    assert parity(model, data.normalizer, spec, path, len(data.tasks), goal_dims=data.goal_dims) <= 1e-4

    runner = PolicyRunner(path)
    assert runner.meta["image_window"] and runner.meta["images"] == list(data.cameras)
    target, draw = np.array([0.3, -0.2]), target_data.draw
    obs = {"observation.state": np.zeros(2, np.float32),
           "observation.images.cam0": draw(target, 32), "observation.images.cam1": draw(target, 32)[:24]}
    if goal == "image":
        with pytest.raises(ValueError, match=r"conditioned on a goal image \[32, 32, 3\]"):
            runner.reset()
        with pytest.raises(ValueError, match=r"goal image has shape \[24, 32, 3\] uint8, but the policy takes "
                                             r"\[32, 32, 3\] uint8"):
            runner.reset(goal_image=np.zeros((24, 32, 3), np.uint8))
        runner.reset(goal_image=obs["observation.images.cam0"])
    else:
        runner.reset(target_data.tasks[0])
    action = runner.act(obs)
    assert action.shape == (2,) and np.isfinite(action).all()
    # the runner's window equals the graph's on the same inputs
    bad = dict(obs, **{"observation.images.cam1": np.zeros((32, 32, 3), np.uint8)})
    with pytest.raises(SpecError, match="observation.images.cam1"):
        runner.act(bad)
    missing = {k: v for k, v in obs.items() if k != "observation.images.cam0"}
    with pytest.raises(SpecError, match="reads observation.images.cam0, which the observation lacks"):
        runner.act(missing)


def test_language_goals_take_any_embedding_and_refuse_empty_text(dataset, tmp_path, one_thread):
    from tether.policies.language_goals import LanguageGoalError, text_embeddings

    with pytest.raises(LanguageGoalError, match="language goal 1 is empty"):
        text_embeddings(["open the drawer", "  "])
    data = SequenceData.from_dataset(dataset, 2, 1, GoalConfig(kind="language"), OBS, cache_dir=tmp_path / "c")
    assert data.task_embeddings.shape == (2, 384)
    assert not np.allclose(data.task_embeddings[0], data.task_embeddings[1])
    path = export_policy(build(data, "gcbc").eval(), data.normalizer, Dataset(dataset).spec, data.tasks,
                         tmp_path / "p.onnx")
    runner = PolicyRunner(path)
    new = text_embeddings(["move to the square"])[0]
    runner.reset(goal_embedding=new)
    assert np.allclose(runner._goal["goal"][0], new)
    with pytest.raises(ValueError, match="goal embedding has 3 values"):
        runner.reset(goal_embedding=np.zeros(3))


def test_multimodal_goals_follow_the_image_or_the_language_goal(dataset, tmp_path, one_thread, target_data):
    """MDT's multimodal goals: training samples draw one of the two goals; the exported graph
    follows the goal image where goal_is_image is 1 and the language goal where it is 0, and the
    runner feeds whichever it is given (a task's string by default)."""
    import onnxruntime as ort

    with pytest.raises(ValueError, match=r"--goal.image-goal-prob is 1.5"):
        SequenceData.from_dataset(dataset, 2, 1, GoalConfig(kind="multimodal", image_goal_prob=1.5), OBS)
    data = SequenceData.from_dataset(dataset, 2, 3, GoalConfig(kind="multimodal"), OBS, cache_dir=tmp_path / "c")
    b = data.batches(8)(0)
    assert b["goal"].shape == (8, 384) and b["goal_image"].shape == (8, 32, 32, 3)
    model = build(data, "gcbc")
    model.loss(**b).backward()  # the language path gets gradients: a batch of 8 draws it (p = 0.996)
    assert model.language_projection.weight.grad.abs().sum() > 0
    spec = Dataset(dataset).spec
    path = export_policy(model.eval(), data.normalizer, spec, data.tasks, tmp_path / "p.onnx")
    assert parity(model, data.normalizer, spec, path, len(data.tasks)) <= 1e-4

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {"obs": np.zeros((1, 2, 2), np.float32), "goal": data.task_embeddings[:1],
            "goal_image": target_data.draw(np.array([0.5, 0.5]), 32)[None],
            "observation.images.cam0": rng.integers(0, 256, (1, 2, 32, 32, 3), dtype=np.uint8),
            "observation.images.cam1": rng.integers(0, 256, (1, 2, 24, 32, 3), dtype=np.uint8)}

    def action(**change):
        return session.run(["action"], {**feed, **change})[0]

    other_image = target_data.draw(np.array([-0.5, -0.5]), 32)[None]
    image, language = np.ones((1, 1), np.float32), np.zeros((1, 1), np.float32)
    assert np.allclose(action(goal_is_image=image), action(goal_is_image=image, goal=data.task_embeddings[1:]))
    assert not np.allclose(action(goal_is_image=image), action(goal_is_image=image, goal_image=other_image))
    assert np.allclose(action(goal_is_image=language), action(goal_is_image=language, goal_image=other_image))
    assert not np.allclose(action(goal_is_image=language), action(goal_is_image=language, goal=data.task_embeddings[1:]))

    runner = PolicyRunner(path)
    assert runner.meta["goal"]["kind"] == "multimodal"
    runner.reset(data.tasks[1])
    assert runner._goal["goal_is_image"][0, 0] == 0 and np.allclose(runner._goal["goal"][0], data.task_embeddings[1])
    runner.reset(goal_image=feed["goal_image"][0])
    assert runner._goal["goal_is_image"][0, 0] == 1
    with pytest.raises(ValueError, match="not both"):
        runner.fix_goal(feed["goal_image"][0], data.task_embeddings[0])


def test_the_camera_lets_the_policy_find_the_target(dataset, tmp_path, one_thread):
    """The target is only in the frames: a policy that sees beats one reading the state alone."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(SMALL, action_horizon=1, window=1)
    optim = TrainConfig(steps=150, batch_size=32, warmup_steps=10, lr=2e-3, ema_decay=0.9)
    from tether.policies.train import train

    errors = {}
    for name, obs in (("seeing", dataclasses.replace(OBS, cameras=("cam0",))), ("blind", ObservationConfig())):
        data = SequenceData.from_dataset(dataset, 1, 1, GoalConfig(), obs, cache_dir=tmp_path / "c")
        if obs.cameras:
            model = build(data, "gcbc", obs, cfg)
        else:
            from tether.policies.gcbc import Gcbc

            model = Gcbc(cfg, data.obs_dim, data.action_dim, data.goal_dim)
        ema = train(model, data.batches(optim.batch_size), optim).ema
        batch = data.batches(512, seed=99)(0)
        with torch.no_grad():
            if obs.cameras:
                pred = ema.act(batch["obs"], batch["frames"], batch["goal"], None)
            else:
                pred = ema(batch["obs"], batch["goal"])
        reach = batch["goal"][:, 0].bool()
        errors[name] = float(((pred - batch["actions"]) ** 2)[reach].mean())
    assert errors["seeing"] < 0.5 * errors["blind"], errors


def test_checkpoint_round_trip(dataset, tmp_path, one_thread):
    from tether.policies.checkpoint import load_policy, save_policy

    data = SequenceData.from_dataset(dataset, 2, 3, GoalConfig(), OBS, cache_dir=tmp_path / "c")
    model = build(data).eval()
    save_policy(tmp_path / "p.pt", model, data.normalizer, data.tasks, Dataset(dataset).spec)
    loaded = load_policy(tmp_path / "p.pt").model
    batch = data.batches(4)(0)
    noise = torch.randn(4, loaded.length, 2)
    with torch.no_grad():
        a = model.act(batch["obs"], batch["frames"], batch["goal"], None, noise)
        b = loaded.act(batch["obs"], batch["frames"], batch["goal"], None, noise)
    assert torch.equal(a, b)


def test_resnet18_groupnorm_and_weights_from_a_file(tmp_path):
    import torchvision

    cfg = ObservationConfig(encoder="resnet18", feature_dim=8)
    encoder = build_image_encoder(cfg, (64, 64))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in encoder.modules())
    frames = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    assert encoder.eval()(frames).shape == (2, 8)
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "r18.pt")
    loaded = build_image_encoder(dataclasses.replace(cfg, weights=str(tmp_path / "r18.pt")), (64, 64))
    assert torch.equal(loaded.backbone[0].weight, reference.conv1.weight)
    torch.save({"not": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="is not a ResNet-18 state dict"):
        build_image_encoder(dataclasses.replace(cfg, weights=str(tmp_path / "bad.pt")), (64, 64))


def test_clip_image_tower_encodes_frames_at_its_input_size():
    cfg = ObservationConfig(encoder="clip", clip_model="ViT-S-32", feature_dim=8, freeze_encoder=True)
    encoder = build_image_encoder(cfg, (48, 64)).eval()
    assert encoder.preprocess.out_hw == (224, 224)
    assert not any(p.requires_grad for p in encoder.tower.parameters())
    with torch.no_grad():
        assert encoder(torch.randint(0, 256, (1, 48, 64, 3), dtype=torch.uint8)).shape == (1, 8)

"""The policies' public API: DP's contract, normalisation, checkpoints, queues, image observations."""
import json

import pytest
import torch

from drifting_policy.normalizer import LinearNormalizer, get_image_range_normalizer
from drifting_policy.policies import (
    BasePolicy,
    DiffusionPolicy,
    DiffusionPolicyConfig,
    DriftingPolicy,
    DriftingPolicyConfig,
)

OBS_DIM, ACTION_DIM, HORIZON, TO, TA = 5, 2, 8, 2, 4
TINY = dict(down_dims=(16, 32), diffusion_step_embed_dim=16, n_layer=1, n_head=2, n_emb=32, p_drop_attn=0.0)
POLICIES = [
    pytest.param(DriftingPolicy, DriftingPolicyConfig, {}, id="drifting"),
    # DDIM with 5 steps keeps sampling fast; DDPM sampling is tested once below.
    pytest.param(DiffusionPolicy, DiffusionPolicyConfig, {"sampler": "ddim", "num_inference_steps": 5}, id="ddpm"),
]
BACKBONES = ["unet", "transformer"]


def fitted_normalizer(action_offset: float = 0.0) -> LinearNormalizer:
    gen = torch.Generator().manual_seed(0)
    normalizer = LinearNormalizer()
    normalizer.fit({"obs": torch.randn(256, OBS_DIM, generator=gen) * 2 + 1,
                    "action": torch.randn(256, ACTION_DIM, generator=gen) * 10 + action_offset})
    return normalizer


def make_policy(policy_class, config_class, options, backbone="unet", action_offset=0.0):
    torch.manual_seed(0)
    config = config_class(obs_dim=OBS_DIM, action_dim=ACTION_DIM, horizon=HORIZON, n_obs_steps=TO,
                          n_action_steps=TA, backbone=backbone, **TINY, **options)
    policy = policy_class(config)
    policy.set_normalizer(fitted_normalizer(action_offset))
    return policy


def lowdim_batch(batch_size=3, obs_steps=HORIZON):
    gen = torch.Generator().manual_seed(1)
    return {"obs": torch.randn(batch_size, obs_steps, OBS_DIM, generator=gen),
            "action": torch.randn(batch_size, HORIZON, ACTION_DIM, generator=gen)}


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("policy_class, config_class, options", POLICIES)
def test_predict_action_shapes_and_executed_slice(policy_class, config_class, options, backbone):
    policy = make_policy(policy_class, config_class, options, backbone).eval()
    obs = lowdim_batch()["obs"]
    out = policy.predict_action({"obs": obs}, generator=torch.Generator().manual_seed(0))
    assert out["action_pred"].shape == (3, HORIZON, ACTION_DIM)
    assert out["action"].shape == (3, TA, ACTION_DIM)
    torch.testing.assert_close(out["action"], out["action_pred"][:, TO - 1 : TO - 1 + TA], rtol=0, atol=0)
    # Only the first To observation steps matter.
    again = policy.predict_action({"obs": obs[:, :TO]}, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(again["action_pred"], out["action_pred"], rtol=0, atol=0)


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("policy_class, config_class, options", POLICIES)
def test_compute_loss_is_scalar_with_gradient(policy_class, config_class, options, backbone):
    policy = make_policy(policy_class, config_class, options, backbone).train()
    loss, metrics = policy(lowdim_batch())
    assert loss.ndim == 0 and loss.requires_grad and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in policy.model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    # Metrics stay detached tensors (no device sync per metric) until they are logged.
    assert all(torch.is_tensor(v) and v.ndim == 0 and not v.requires_grad for v in metrics.values())
    assert float(metrics["loss"]) == pytest.approx(float(loss.detach()))


def test_drifting_step_feature_and_extra_noise():
    policy = make_policy(DriftingPolicy, DriftingPolicyConfig,
                         {"features": ("chunk", "step"), "extra_noise_dim": 3, "n_generated": 4})
    loss, metrics = policy(lowdim_batch())
    loss.backward()
    assert {"chunk/loss", "step/loss"} <= set(metrics)
    # The extra noise reaches the network: two draws for the same observation differ.
    cond = policy.encode_obs(lowdim_batch(1)).repeat(2, 1, 1)
    torch.manual_seed(0)
    noise = torch.randn(1, HORIZON, ACTION_DIM).repeat(2, 1, 1)
    extra = torch.randn(2, 3)
    outputs = policy.model(noise, None, cond, extra)
    assert not torch.allclose(outputs[0], outputs[1])


@pytest.mark.parametrize("extra_noise_dim", [0, 3])
def test_explicit_noise_makes_the_chunk_a_function_of_its_inputs(extra_noise_dim):
    policy = make_policy(DriftingPolicy, DriftingPolicyConfig, {"extra_noise_dim": extra_noise_dim}).eval()
    obs = {"obs": lowdim_batch()["obs"]}
    shapes = policy.noise_shapes(3)
    assert shapes["noise"] == (3, HORIZON, ACTION_DIM)
    assert ("extra_noise" in shapes) == bool(extra_noise_dim)
    noise = {name: torch.randn(shape) for name, shape in shapes.items()}
    first = policy.predict_action(obs, noise=noise)["action_pred"]
    torch.manual_seed(123)  # the global random state does not matter once the noise is given
    second = policy.predict_action(obs, noise=noise)["action_pred"]
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    # The same draws as the generator would make give the generator's chunk.
    gen = torch.Generator().manual_seed(5)
    drawn = {name: torch.randn(shape, generator=gen) for name, shape in shapes.items()}
    seeded = policy.predict_action(obs, generator=torch.Generator().manual_seed(5))["action_pred"]
    torch.testing.assert_close(policy.predict_action(obs, noise=drawn)["action_pred"], seeded, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"noise 'noise' must be \(3, 8, 2\)"):
        policy.predict_action(obs, noise={**noise, "noise": torch.zeros(3, HORIZON, 3)})
    with pytest.raises(KeyError, match="noise must be a dict with keys"):
        policy.predict_action(obs, noise={"nois": noise["noise"]})
    ddpm = make_policy(DiffusionPolicy, DiffusionPolicyConfig, {"sampler": "ddim", "num_inference_steps": 2})
    with pytest.raises(ValueError, match="takes no explicit noise"):
        ddpm.predict_action(obs, noise=noise)


@pytest.mark.parametrize("policy_class, config_class, options", POLICIES)
def test_normalizer_is_applied(policy_class, config_class, options):
    policy = make_policy(policy_class, config_class, options, action_offset=100.0).eval()
    obs = lowdim_batch()["obs"]
    normalized_obs = policy.normalizer["obs"].normalize(obs[:, :TO])
    torch.testing.assert_close(policy.encode_obs({"obs": obs}), normalized_obs)
    chunk = policy.sample_chunk(policy.encode_obs({"obs": obs}), torch.Generator().manual_seed(0))
    out = policy.predict_action({"obs": obs}, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out["action_pred"], policy.normalizer["action"].unnormalize(chunk))
    assert out["action_pred"].mean() > 50  # data units, around the offset of 100


def test_ddpm_sampling_with_all_training_steps():
    policy = make_policy(DiffusionPolicy, DiffusionPolicyConfig, {}).eval()
    assert policy.config.sampler == "ddpm" and policy.config.num_inference_steps is None
    calls = []
    policy.model.register_forward_hook(lambda *args: calls.append(1))
    out = policy.predict_action({"obs": lowdim_batch()["obs"]})
    assert len(calls) == 100 and torch.isfinite(out["action"]).all()
    policy.set_sampler("ddim", 10)
    calls.clear()
    policy.predict_action({"obs": lowdim_batch()["obs"]})
    assert len(calls) == 10


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("policy_class, config_class, options", POLICIES)
def test_save_and_load_give_the_same_actions(tmp_path, policy_class, config_class, options, backbone):
    policy = make_policy(policy_class, config_class, options, backbone).eval()
    policy.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["type"] == config_class.type and saved["backbone"] == backbone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]

    loaded = BasePolicy.from_pretrained(tmp_path)
    assert type(loaded) is policy_class and loaded.config == policy.config and not loaded.training
    obs = {"obs": lowdim_batch()["obs"]}
    expected = policy.predict_action(obs, generator=torch.Generator().manual_seed(3))
    got = loaded.predict_action(obs, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(got["action_pred"], expected["action_pred"], rtol=0, atol=0)
    torch.testing.assert_close(loaded.normalizer["action"].scale, policy.normalizer["action"].scale)


def test_from_pretrained_checks_the_class(tmp_path):
    make_policy(DriftingPolicy, DriftingPolicyConfig, {}).save_pretrained(tmp_path)
    assert type(DriftingPolicy.from_pretrained(tmp_path)) is DriftingPolicy
    with pytest.raises(TypeError, match="DriftingPolicy, not a DiffusionPolicy"):
        DiffusionPolicy.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="config.json"):
        BasePolicy.from_pretrained(tmp_path / "missing")


def test_config_from_a_mapping_and_validation():
    policy = DriftingPolicy(dict(obs_dim=OBS_DIM, action_dim=ACTION_DIM, horizon=HORIZON, n_obs_steps=TO,
                                 n_action_steps=TA, down_dims=[16, 32], temperatures=[0.05]))
    assert policy.config.down_dims == (16, 32) and policy.config.temperatures == (0.05,)
    with pytest.raises(ValueError, match="exactly one of obs_dim"):
        DriftingPolicyConfig(action_dim=2)
    with pytest.raises(ValueError, match="n_action_steps"):
        DriftingPolicyConfig(obs_dim=3, action_dim=2, horizon=8, n_obs_steps=2, n_action_steps=8)
    with pytest.raises(ValueError, match="features"):
        DriftingPolicyConfig(obs_dim=3, action_dim=2, features=("pixels",))
    with pytest.raises(ValueError, match="sampler"):
        DiffusionPolicyConfig(obs_dim=3, action_dim=2, sampler="euler")


def test_bad_observation_names_key_and_shape():
    policy = make_policy(DriftingPolicy, DriftingPolicyConfig, {})
    with pytest.raises(KeyError, match="'obs'"):
        policy.predict_action({"state": torch.zeros(2, TO, OBS_DIM)})
    with pytest.raises(ValueError, match=r"\(B, >= 2, 5\); got \(2, 2, 4\)"):
        policy.predict_action({"obs": torch.zeros(2, TO, 4)})
    with pytest.raises(ValueError, match="'action' must be"):
        policy.compute_loss({"obs": torch.zeros(2, TO, OBS_DIM), "action": torch.zeros(2, 4, ACTION_DIM)})


def test_select_action_queues():
    policy = make_policy(DriftingPolicy, DriftingPolicyConfig, {}).eval()
    seen = []
    predict = policy.predict_action

    def counting_predict(obs_dict):
        seen.append(obs_dict["obs"].clone())
        out = predict(obs_dict)
        seen_chunks.append(out["action"])
        return out

    seen_chunks = []
    policy.predict_action = counting_predict
    steps = torch.randn(2 * TA + 1, 3, OBS_DIM)
    actions = [policy.select_action(step) for step in steps]
    assert len(seen) == 3  # predicted at steps 0, Ta and 2 Ta
    assert all(a.shape == (3, ACTION_DIM) for a in actions)
    # The first chunk's actions come out in order; at reset the first observation fills every slot.
    torch.testing.assert_close(torch.stack(actions[:TA], dim=1), seen_chunks[0])
    torch.testing.assert_close(seen[0], steps[0][:, None].expand(-1, TO, -1))
    torch.testing.assert_close(seen[1], steps[TA - 1 : TA + 1].transpose(0, 1))
    policy.reset()
    policy.select_action({"obs": steps[-1]})
    assert len(seen) == 4
    torch.testing.assert_close(seen[3], steps[-1][:, None].expand(-1, TO, -1))


SHAPE_META = {"obs": {"image": {"shape": [3, 32, 32], "type": "rgb"}, "agent_pos": {"shape": [2]}},
              "action": {"shape": [ACTION_DIM]}}


def image_normalizer() -> LinearNormalizer:
    normalizer = LinearNormalizer()
    normalizer.fit({"agent_pos": torch.rand(64, 2) * 500, "action": torch.rand(64, ACTION_DIM) * 500})
    normalizer["image"] = get_image_range_normalizer()
    return normalizer


@pytest.mark.parametrize("policy_class, config_class, options", POLICIES)
def test_image_policy(tmp_path, policy_class, config_class, options):
    torch.manual_seed(0)
    config = config_class(shape_meta=SHAPE_META, horizon=HORIZON, n_obs_steps=TO, n_action_steps=TA,
                          crop_shape=(28, 28), **TINY, **options)
    assert config.action_dim == ACTION_DIM and config.obs_dim is None
    policy = policy_class(config)
    policy.set_normalizer(image_normalizer())
    batch = {"obs": {"image": torch.rand(2, TO, 3, 32, 32), "agent_pos": torch.rand(2, TO, 2) * 500},
             "action": torch.rand(2, HORIZON, ACTION_DIM) * 500}
    loss = policy.compute_loss(batch)
    loss.backward()
    assert loss.ndim == 0 and any(p.grad is not None for p in policy.obs_encoder.parameters())
    policy.eval()
    out = policy.predict_action(batch["obs"], generator=torch.Generator().manual_seed(0))
    assert out["action"].shape == (2, TA, ACTION_DIM) and out["action_pred"].shape == (2, HORIZON, ACTION_DIM)
    policy.save_pretrained(tmp_path)
    loaded = BasePolicy.from_pretrained(tmp_path)
    again = loaded.predict_action(batch["obs"], generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(again["action_pred"], out["action_pred"])
    single = {"image": torch.rand(2, 3, 32, 32), "agent_pos": torch.rand(2, 2)}
    assert loaded.select_action(single).shape == (2, ACTION_DIM)


def test_drift_per_observation_is_one_core_call_per_observation():
    from drifting import feature_drift_loss

    policy = make_policy(DriftingPolicy, DriftingPolicyConfig, {"features": ("chunk", "step")})
    assert policy.config.drift_per_observation
    gen = {"chunk": torch.randn(3, 8, 16), "step": torch.randn(3, 8, 8, 2)}
    pos = {"chunk": torch.randn(3, 1, 16), "step": torch.randn(3, 1, 8, 2)}
    loss, _ = policy.observation_losses(gen, pos)
    options = dict(temperatures=(0.02, 0.05, 0.2), affinity_floor=0.0)
    for b in range(3):
        one, _ = feature_drift_loss({k: v[b : b + 1] for k, v in gen.items()},
                                    {k: v[b : b + 1] for k, v in pos.items()}, **options)
        torch.testing.assert_close(loss[b : b + 1], one)
    policy.config.drift_per_observation = False
    batched, _ = policy.observation_losses(gen, pos)
    torch.testing.assert_close(batched, feature_drift_loss(gen, pos, **options)[0])
    assert not torch.allclose(batched, loss)

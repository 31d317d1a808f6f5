"""Action networks: ConditionalUnet1D and ActionTransformer, with and without the diffusion step."""

import pytest
import torch
import torch.nn as nn

from drifting_policy.models import ActionTransformer, ConditionalUnet1D, count_parameters
from drifting_policy.models.common import SinusoidalEmbedding, timesteps_for_batch


def small_unet(**kwargs):
    return ConditionalUnet1D(2, 3, 2, down_dims=(16, 32, 64), diffusion_step_embed_dim=16, **kwargs)


def small_transformer(**kwargs):
    args = dict(input_dim=2, output_dim=3, horizon=8, n_obs_steps=3, cond_dim=5, n_layer=2, n_head=2, n_emb=32)
    args.update(kwargs)
    return ActionTransformer(**args).eval()


# --- shared pieces -------------------------------------------------------------------------------------


def test_count_parameters_counts_shared_weights_once():
    linear = nn.Linear(3, 4)
    assert count_parameters(linear) == 16
    assert count_parameters(nn.Sequential(linear, linear)) == 16
    linear.bias.requires_grad_(False)
    assert count_parameters(linear, trainable_only=True) == 12


def test_sinusoidal_embedding_distinguishes_steps():
    emb = SinusoidalEmbedding(16)(torch.arange(100))
    assert emb.shape == (100, 16)
    assert torch.cdist(emb, emb).add(torch.eye(100)).min() > 1e-2
    with pytest.raises(ValueError, match="even dim"):
        SinusoidalEmbedding(7)


@pytest.mark.parametrize("timestep", [7, torch.tensor(7), torch.tensor([7]), torch.full((4,), 7)])
def test_timestep_forms_broadcast_to_batch(timestep):
    t = timesteps_for_batch(timestep, True, 4, "cpu", "net")
    assert t.tolist() == [7, 7, 7, 7]


def test_timestep_with_wrong_batch_is_rejected():
    with pytest.raises(ValueError, match=r"scalar or have shape \(4,\)"):
        timesteps_for_batch(torch.zeros(3), True, 4, "cpu", "net")


# --- U-Net ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("timestep", [3, torch.tensor(3), torch.tensor([1, 2, 3, 4])])
def test_unet_with_timestep_keeps_sample_shape(timestep):
    net = small_unet()
    out = net(torch.randn(4, 16, 2), timestep, torch.randn(4, 2, 3))
    assert out.shape == (4, 16, 2)


def test_unet_without_timestep_has_no_step_encoder():
    net = small_unet(use_timestep=False)
    assert net.step_encoder is None
    assert not any("step" in name for name, _ in net.named_parameters())
    assert count_parameters(net) < count_parameters(small_unet())
    assert net(torch.randn(4, 16, 2), cond=torch.randn(4, 2, 3)).shape == (4, 16, 2)


def test_unet_output_depends_on_condition_and_timestep():
    torch.manual_seed(0)
    net = small_unet()
    x, cond = torch.randn(2, 16, 2), torch.randn(2, 2, 3)
    base = net(x, 0, cond)
    assert not torch.allclose(base, net(x, 50, cond))
    assert not torch.allclose(base, net(x, 0, cond + 1))


def test_unet_rejects_inputs_that_do_not_match_its_mode():
    x, cond = torch.randn(2, 16, 2), torch.randn(2, 2, 3)
    with pytest.raises(ValueError, match="use_timestep=False and takes no timestep"):
        small_unet(use_timestep=False)(x, 5, cond)
    with pytest.raises(ValueError, match="needs a timestep"):
        small_unet()(x, None, cond)
    with pytest.raises(ValueError, match=r"cond must be \(2, 2, 3\), got \(2, 6\)"):
        small_unet()(x, 5, torch.randn(2, 6))
    with pytest.raises(ValueError, match=r"cond must be \(2, 2, 3\), got None"):
        small_unet()(x, 5)
    with pytest.raises(ValueError, match="takes no extra"):
        small_unet()(x, 5, cond, torch.randn(2, 1))
    with pytest.raises(ValueError, match=r"extra must be \(2, 4\), got None"):
        small_unet(extra_cond_dim=4)(x, 5, cond)
    with pytest.raises(ValueError, match=r"sample must be \(B, T, 2\)"):
        small_unet()(torch.randn(2, 16, 3), 5, cond)
    with pytest.raises(ValueError, match="needs a condition"):
        ConditionalUnet1D(2, 0, use_timestep=False)


def test_unet_horizon_must_divide_by_downsampling_factor():
    net = small_unet()  # three levels: T must be a multiple of 4
    assert net(torch.randn(1, 12, 2), 0, torch.randn(1, 2, 3)).shape == (1, 12, 2)
    with pytest.raises(ValueError, match="T=10 must be divisible by 4"):
        net(torch.randn(1, 10, 2), 0, torch.randn(1, 2, 3))


def test_unet_without_observation_condition_uses_timestep_only():
    net = ConditionalUnet1D(2, 0, down_dims=(16, 32), diffusion_step_embed_dim=16)
    assert net(torch.randn(3, 8, 2), 1).shape == (3, 8, 2)
    with pytest.raises(ValueError, match="takes no cond"):
        net(torch.randn(3, 8, 2), 1, torch.randn(3, 1, 4))


def test_unet_uses_groupnorm_and_no_batchnorm():
    modules = list(small_unet().modules())
    assert any(isinstance(m, nn.GroupNorm) for m in modules)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in modules)


def test_unet_at_diffusion_policy_lowdim_size():
    # DP's low-dim PushT config (obs 20-D x To=2, down_dims 256/512/1024, kernel 5, FiLM scale):
    # DP's own ConditionalUnet1D has 65,783,298 parameters at these settings.
    net = ConditionalUnet1D(2, 20, 2, down_dims=(256, 512, 1024), kernel_size=5, diffusion_step_embed_dim=256)
    assert count_parameters(net) == 65_783_298


def test_unet_overfits_a_fixed_target():
    """Drifting-mode regression: fixed noise + condition -> a smooth target chunk; loss must fall > 10x."""
    torch.manual_seed(0)
    net = ConditionalUnet1D(2, 4, down_dims=(16, 32), n_groups=4, use_timestep=False)
    noise, cond = torch.randn(8, 16, 2), torch.randn(8, 1, 4)
    steps = torch.arange(16.0)[None, :, None]
    target = torch.sin(0.4 * steps + cond[:, :, :2]) + 0.5 * noise
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    losses = []
    for _ in range(60):
        loss = (net(noise, cond=cond) - target).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, losses[::10]


# --- Transformer ---------------------------------------------------------------------------------------


def test_transformer_shapes_with_and_without_timestep():
    x, cond = torch.randn(4, 8, 2), torch.randn(4, 3, 5)
    assert small_transformer()(x, torch.tensor([0, 1, 2, 3]), cond).shape == (4, 8, 3)
    assert small_transformer(n_cond_layers=2)(x, 9, cond).shape == (4, 8, 3)
    drifting = small_transformer(use_timestep=False)
    assert drifting.step_emb is None
    assert drifting(x, cond=cond).shape == (4, 8, 3)
    assert small_transformer(cond_dim=0)(x, 9).shape == (4, 8, 3)


def test_transformer_rejects_mismatched_inputs():
    x, cond = torch.randn(4, 8, 2), torch.randn(4, 3, 5)
    with pytest.raises(ValueError, match="takes no timestep"):
        small_transformer(use_timestep=False)(x, 1, cond)
    with pytest.raises(ValueError, match="needs a timestep"):
        small_transformer()(x, None, cond)
    with pytest.raises(ValueError, match=r"sample must be \(B, 8, 2\)"):
        small_transformer()(torch.randn(4, 7, 2), 1, cond)
    with pytest.raises(ValueError, match=r"cond must be \(4, 3, 5\), got \(4, 2, 5\)"):
        small_transformer()(x, 1, cond[:, :2])
    with pytest.raises(ValueError, match="needs a condition"):
        small_transformer(cond_dim=0, use_timestep=False)


@pytest.mark.parametrize("use_timestep", [True, False])
def test_transformer_is_causal_in_actions_and_observations(use_timestep):
    torch.manual_seed(0)
    net = small_transformer(use_timestep=use_timestep)
    t = 4 if use_timestep else None
    x, cond = torch.randn(2, 8, 2), torch.randn(2, 3, 5)
    base = net(x, t, cond)

    x_changed = x.clone()
    x_changed[:, 5] += 10.0
    out = net(x_changed, t, cond)
    assert torch.allclose(out[:, :5], base[:, :5], atol=1e-7)
    assert (out[:, 5:] - base[:, 5:]).abs().amax(dim=(0, 2)).min() > 1e-5

    # Observation step j is visible to action steps >= j only.
    cond_changed = cond.clone()
    cond_changed[:, 2] += 10.0
    out = net(x, t, cond_changed)
    assert torch.allclose(out[:, :2], base[:, :2], atol=1e-7)
    assert (out[:, 2:] - base[:, 2:]).abs().amax(dim=(0, 2)).min() > 1e-5


def test_transformer_without_causal_attention_mixes_all_steps():
    torch.manual_seed(0)
    net = small_transformer(causal_attn=False)
    x, cond = torch.randn(2, 8, 2), torch.randn(2, 3, 5)
    x_changed = x.clone()
    x_changed[:, 7] += 10.0
    assert (net(x, 0, cond)[:, 0] - net(x_changed, 0, cond)[:, 0]).abs().max() > 1e-4


def test_transformer_optim_groups_cover_every_parameter_once():
    net = small_transformer(n_cond_layers=1)
    decay, no_decay = net.get_optim_groups(weight_decay=1e-3)
    assert decay["weight_decay"] == 1e-3 and no_decay["weight_decay"] == 0.0
    decay_ids = {id(p) for p in decay["params"]}
    no_decay_ids = {id(p) for p in no_decay["params"]}
    assert not decay_ids & no_decay_ids
    assert decay_ids | no_decay_ids == {id(p) for p in net.parameters()}
    assert {id(net.pos_emb), id(net.cond_pos_emb), id(net.ln_f.weight), id(net.head.bias)} <= no_decay_ids
    assert id(net.head.weight) in decay_ids
    assert id(net.decoder.layers[0].self_attn.in_proj_weight) in decay_ids
    torch.optim.AdamW(net.get_optim_groups(1e-3), lr=1e-4, betas=(0.9, 0.95))


def test_transformer_at_diffusion_policy_size():
    # DP's transformer (8 layers, 4 heads, 256-d) with 2-D actions, T=16, To=2, 20-D observations:
    # DP's own TransformerForDiffusion has 8,965,122 parameters at these settings.
    net = ActionTransformer(2, 2, 16, 2, 20)
    assert count_parameters(net) == 8_965_122
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


@pytest.mark.parametrize("backbone", ["unet", "transformer"])
def test_every_backbone_takes_the_condition_the_same_way(backbone):
    """(B, To, F) observation features and (B, E) per-sample extras, built from a policy config by name: a policy
    needs no backbone-specific code."""
    from drifting_policy.models import BACKBONES
    from drifting_policy.policies import DriftingPolicyConfig

    config = DriftingPolicyConfig(obs_dim=5, action_dim=2, horizon=8, n_obs_steps=3, n_action_steps=4,
                                  backbone=backbone, down_dims=(16, 32), n_layer=1, n_emb=32)
    net = BACKBONES[backbone].from_config(config, cond_dim=5, extra_cond_dim=4, use_timestep=False).eval()
    noise, cond, extra = torch.randn(2, 8, 2), torch.randn(2, 3, 5), torch.randn(2, 4)
    out = net(noise, None, cond, extra)
    assert out.shape == (2, 8, 2)
    assert not torch.allclose(out, net(noise, None, cond, extra + 1))  # the extras reach the output
    assert not torch.allclose(out, net(noise, None, cond + 1, extra))
    with pytest.raises(ValueError, match=r"extra must be \(2, 4\)"):
        net(noise, None, cond, torch.randn(2, 3))
    groups = net.get_optim_groups(1e-3)
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))

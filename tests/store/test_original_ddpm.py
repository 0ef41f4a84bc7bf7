"""The original PyTorch ports of Ho et al.'s checkpoints (ermongroup/ddim's models/diffusion.py, pesser's
pytorch_diffusion): a state dict in that layout, written by a re-implementation of that code here, loads with the
re-implementation's outputs and with those of the same weights imported through the diffusers route; the DDIM
code's list checkpoint gives its EMA state; what is not that layout is a one-line error naming what was found."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ddpmlab
from ddpmlab.cli import main
from ddpmlab.store.diffusers_unet import unet_spec
from ddpmlab.store.original_ddpm import original_spec


# -- ermongroup/ddim models/diffusion.py, written again from the paper's code: the names and the maths -------------
def get_timestep_embedding(timesteps, embedding_dim):
    half_dim = embedding_dim // 2
    emb = torch.exp(torch.arange(half_dim, dtype=torch.float32) * -(math.log(10000) / (half_dim - 1)))
    emb = timesteps.float()[:, None] * emb[None, :]
    return torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)


def normalize(channels):
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels, out_channels, temb_channels):
        super().__init__()
        self.norm1, self.conv1 = normalize(in_channels), nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.temb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2, self.conv2 = normalize(out_channels), nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1, 1, 0)

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x))) + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class AttnBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.norm = normalize(channels)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(channels, channels, 1) for _ in range(4))

    def forward(self, x):
        h_ = self.norm(x)
        q, k, v = self.q(h_), self.k(h_), self.v(h_)
        b, c, h, w = q.shape
        w_ = torch.bmm(q.reshape(b, c, h * w).permute(0, 2, 1), k.reshape(b, c, h * w)) * c ** (-0.5)
        w_ = torch.softmax(w_, dim=2)
        h_ = torch.bmm(v.reshape(b, c, h * w), w_.permute(0, 2, 1)).reshape(b, c, h, w)
        return x + self.proj_out(h_)


class Downsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 2, 0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Model(nn.Module):
    def __init__(self, ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,), resolution=32):
        super().__init__()
        self.ch, self.num_resolutions, self.num_res_blocks = ch, len(ch_mult), num_res_blocks
        self.temb = nn.Module()
        self.temb.dense = nn.ModuleList([nn.Linear(ch, 4 * ch), nn.Linear(4 * ch, 4 * ch)])
        self.conv_in = nn.Conv2d(3, ch, 3, 1, 1)
        curr_res, in_ch_mult, self.down = resolution, (1,) + tuple(ch_mult), nn.ModuleList()
        for i_level in range(self.num_resolutions):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_in, block_out = ch * in_ch_mult[i_level], ch * ch_mult[i_level]
            for _ in range(num_res_blocks):
                block.append(ResnetBlock(block_in, block_out, 4 * ch))
                block_in = block_out
                if curr_res in attn_resolutions:
                    attn.append(AttnBlock(block_in))
            down = nn.Module()
            down.block, down.attn = block, attn
            if i_level != self.num_resolutions - 1:
                down.downsample = Downsample(block_in)
                curr_res //= 2
            self.down.append(down)
        self.mid = nn.Module()
        self.mid.block_1, self.mid.attn_1 = ResnetBlock(block_in, block_in, 4 * ch), AttnBlock(block_in)
        self.mid.block_2 = ResnetBlock(block_in, block_in, 4 * ch)
        self.up = nn.ModuleList()
        for i_level in reversed(range(self.num_resolutions)):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_out, skip_in = ch * ch_mult[i_level], ch * ch_mult[i_level]
            for i_block in range(num_res_blocks + 1):
                if i_block == num_res_blocks:
                    skip_in = ch * in_ch_mult[i_level]
                block.append(ResnetBlock(block_in + skip_in, block_out, 4 * ch))
                block_in = block_out
                if curr_res in attn_resolutions:
                    attn.append(AttnBlock(block_in))
            up = nn.Module()
            up.block, up.attn = block, attn
            if i_level != 0:
                up.upsample = Upsample(block_in)
                curr_res *= 2
            self.up.insert(0, up)
        self.norm_out, self.conv_out = normalize(block_in), nn.Conv2d(block_in, 3, 3, 1, 1)

    def forward(self, x, t):
        temb = self.temb.dense[1](F.silu(self.temb.dense[0](get_timestep_embedding(t, self.ch))))
        hs = [self.conv_in(x)]
        for i_level in range(self.num_resolutions):
            for i_block in range(self.num_res_blocks):
                h = self.down[i_level].block[i_block](hs[-1], temb)
                if len(self.down[i_level].attn) > 0:
                    h = self.down[i_level].attn[i_block](h)
                hs.append(h)
            if i_level != self.num_resolutions - 1:
                hs.append(self.down[i_level].downsample(hs[-1]))
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(hs[-1], temb)), temb)
        for i_level in reversed(range(self.num_resolutions)):
            for i_block in range(self.num_res_blocks + 1):
                h = self.up[i_level].block[i_block](torch.cat([h, hs.pop()], dim=1), temb)
                if len(self.up[i_level].attn) > 0:
                    h = self.up[i_level].attn[i_block](h)
            if i_level != 0:
                h = self.up[i_level].upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


# -- the same weights under diffusers' names (its scripts/convert_ddpm_original_checkpoint_to_diffusers.py) -------
def diffusers_names(state, levels, blocks):
    """{UNet2DModel name: tensor} of an original-layout state dict, written from diffusers' naming alone."""
    res = {"norm1": "norm1", "conv1": "conv1", "temb_proj": "time_emb_proj", "norm2": "norm2", "conv2": "conv2",
           "nin_shortcut": "conv_shortcut"}
    attn = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
    prefixes = {"temb.dense.0": "time_embedding.linear_1", "temb.dense.1": "time_embedding.linear_2",
                "mid.block_1": "mid_block.resnets.0", "mid.attn_1": "mid_block.attentions.0",
                "mid.block_2": "mid_block.resnets.1", "norm_out": "conv_norm_out"}
    out = {}
    for name, value in state.items():
        parts = name.split(".")
        if parts[0] in ("down", "up") and parts[2] in ("downsample", "upsample"):
            level = int(parts[1]) if parts[0] == "down" else levels - 1 - int(parts[1])
            new = f"{parts[0]}_blocks.{level}.{parts[2]}rs.0.conv.{parts[-1]}"
        elif parts[0] in ("down", "up"):
            level = int(parts[1]) if parts[0] == "down" else levels - 1 - int(parts[1])
            kind = {"block": "resnets", "attn": "attentions"}[parts[2]]
            table = res if kind == "resnets" else attn
            new = f"{parts[0]}_blocks.{level}.{kind}.{parts[3]}.{table[parts[4]]}.{parts[-1]}"
        else:
            head = next((p for p in prefixes if name.startswith(p + ".")), None)
            new = prefixes[head] + name[len(head):] if head else name
            if new.startswith("mid_block.resnets"):
                new = new.replace(parts[2], res[parts[2]], 1)
            if new.startswith("mid_block.attentions"):
                new = f"mid_block.attentions.0.{attn[parts[2]]}.{parts[-1]}"
        if "attentions" in new and value.dim() == 4 and "group_norm" not in new:
            value = value[:, :, 0, 0]  # diffusers' attention projections are linear layers
        out[new] = value
    return out


TINY = {"ch": 32, "ch_mult": (1, 2, 2), "num_res_blocks": 1, "attn_resolutions": (16,), "resolution": 32}


def random_original(seed: int, **shape) -> Model:
    torch.manual_seed(seed)
    model = Model(**{**TINY, **shape}).eval()
    with torch.no_grad():  # every weight drawn, so that every one is exercised
        for p in model.parameters():
            p.copy_(torch.randn(p.shape) * (1.0 if p.dim() == 1 else 0.5 / p[0].numel() ** 0.5))
    return model


def their_output(model, x, t):
    with torch.no_grad():
        return model(x, t)


X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
T = torch.tensor([5, 870])


def test_a_plain_state_dict_loads_with_the_original_outputs_and_the_diffusers_routes(tmp_path):
    diffusers = pytest.importorskip("diffusers", reason="the optional [peers] extra: pip install -e .[peers]")
    model = random_original(0)
    path = tmp_path / "model-790000.ckpt"
    torch.save(model.state_dict(), path)
    pipe = ddpmlab.load(path)
    assert pipe.step == 790000 and pipe.net.spec.image_size == 32 and pipe.net.spec.attention_resolutions == [16]
    assert (pipe.config.sample.sampler, pipe.config.sample.variance, pipe.config.diffusion.prediction) == (
        "ddpm", "beta", "eps")
    assert pipe.schedule.T == 1000 and abs(float(pipe.schedule.betas[-1]) - 0.02) < 1e-12
    ours = pipe.denoise(X, T)
    assert (ours - their_output(model, X, T)).abs().max().item() < 1e-5

    # The same weights under diffusers' names, saved by diffusers and imported by ddpmlab.
    unet = diffusers.UNet2DModel(
        sample_size=32, block_out_channels=[32, 64, 64], layers_per_block=1, downsample_padding=0,
        down_block_types=["DownBlock2D", "AttnDownBlock2D", "DownBlock2D"], flip_sin_to_cos=False, freq_shift=1,
        up_block_types=["UpBlock2D", "AttnUpBlock2D", "UpBlock2D"], attention_head_dim=None, norm_eps=1e-6)
    unet.load_state_dict(diffusers_names(model.state_dict(), 3, 1))  # strict: every name accounted for
    unet.save_pretrained(tmp_path / "diffusers")
    diffusers.DDPMScheduler(variance_type="fixed_large").save_pretrained(tmp_path / "diffusers")
    assert (ddpmlab.load(tmp_path / "diffusers").denoise(X, T) - ours).abs().max().item() < 1e-5
    with torch.no_grad():
        assert (unet(X, T).sample - ours).abs().max().item() < 1e-4

    # Converted by `ddpmlab export`, as diffusers reads it.
    assert main(["export", str(path), "--out", str(tmp_path / "exported")]) == 0
    exported = diffusers.DDPMPipeline.from_pretrained(tmp_path / "exported")
    assert exported.scheduler.config.variance_type == "fixed_large"
    with torch.no_grad():
        assert (exported.unet(X, T).sample - their_output(model, X, T)).abs().max().item() < 1e-4


def test_the_ddim_codes_list_gives_its_ema_state_without_the_dataparallel_prefix(tmp_path, capsys):
    raw, ema = random_original(0), random_original(1)
    prefixed = {f"module.{k}": v for k, v in raw.state_dict().items()}
    optimizer = torch.optim.Adam(raw.parameters()).state_dict()
    path = tmp_path / "ckpt.pth"
    torch.save([prefixed, optimizer, 12, 34000, ema.state_dict()], path)
    pipe = ddpmlab.load(path)
    assert pipe.step == 34000
    assert (pipe.denoise(X, T) - their_output(ema, X, T)).abs().max().item() < 1e-5
    assert (ddpmlab.load(path, ema=False).denoise(X, T) - their_output(raw, X, T)).abs().max().item() < 1e-5
    torch.save([prefixed, optimizer, 12, 34000], path)  # trained without EMA: its one state, whatever ema says
    assert (ddpmlab.load(path).denoise(X, T) - their_output(raw, X, T)).abs().max().item() < 1e-5

    out = tmp_path / "s.npz"
    assert main(["sample", str(path), "--sampler", "ddim", "--steps", "2", "--n", "2", "--device", "cpu",
                 "--out", str(out), "--quiet"]) == 0
    assert "from ckpt.pth at step 34000" in capsys.readouterr().out
    with np.load(out) as data:
        assert data["images"].shape == (2, 32, 32, 3)


def test_the_architecture_is_read_from_the_shapes_as_the_papers_cifar10_model():
    state = Model().state_dict()  # Ho et al.'s CIFAR-10 network: 128 channels, (1, 2, 2, 2), attention at 16
    spec = original_spec(state, "model.ckpt")
    google = unet_spec({"sample_size": 32, "block_out_channels": [128, 256, 256, 256], "layers_per_block": 2,
                        "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
                        "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
                        "attention_head_dim": None, "downsample_padding": 0, "flip_sin_to_cos": False,
                        "freq_shift": 1, "norm_eps": 1e-6, "dropout": 0.1})
    assert spec == google  # google/ddpm-cifar10-32's configuration, exactly
    assert sum(v.numel() for v in state.values()) == 35_746_307
    celeba = original_spec(Model(ch=32, ch_mult=(1, 2, 2, 2, 4), resolution=64).state_dict(), "m.ckpt")
    assert (celeba.image_size, celeba.attention_resolutions, celeba.dropout) == (64, [16], 0.1)
    given = original_spec(Model(ch=32, attn_resolutions=()).state_dict(), "m.ckpt", "cifar10")  # nothing to infer from
    assert (given.image_size, given.attention_resolutions, given.channels) == (32, [], 32)


def one_line_error(capsys, argv) -> str:
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    return err


def test_what_is_not_the_layout_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "s.png"
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"encoder.weight": torch.zeros(2), "decoder.weight": torch.zeros(2)}, foreign)
    assert (f"{foreign}: its keys match no known layout (found 2 tensors: encoder.weight, decoder.weight; the "
            f"original DDPM ports' have temb.dense.0.weight") in one_line_error(capsys, ["sample", foreign, "--out", out])
    tiny = tmp_path / "tiny.ckpt"
    torch.save(random_original(0).state_dict(), tiny)
    assert "--arch lsun has channel multipliers [1, 1, 2, 2, 4, 4], the weights [1, 2, 2]" in one_line_error(
        capsys, ["sample", tiny, "--arch", "lsun", "--out", out])
    no_attention = tmp_path / "no-attention.ckpt"
    torch.save(random_original(0, attn_resolutions=()).state_dict(), no_attention)
    assert "no attention layer to place the image size by; give the architecture (cifar10, celeba, lsun)" in \
        one_line_error(capsys, ["sample", no_attention, "--out", out])
    assert "--arch (cifar10, celeba, lsun) applies to the original DDPM ports' .ckpt/.pt/.pth files only" in \
        one_line_error(capsys, ["sample", "pretrained:cpu-demo", "--arch", "cifar10", "--out", out])
    broken = tmp_path / "broken.pt"
    state = random_original(0).state_dict()
    state["conv_out.weight"] = torch.zeros(6, 32, 3, 3)  # a learned variance's six output channels
    torch.save(state, broken)
    assert "the weights do not match the original DDPM layout" in one_line_error(
        capsys, ["sample", broken, "--out", out])
    planted = tmp_path / "planted.ckpt"
    torch.save({"conv_in.weight": Payload(tmp_path / "ran")}, planted)  # unpickling it would create a file
    assert f"{planted}: holds more than weights; it is never unpickled" in one_line_error(
        capsys, ["sample", planted, "--out", out])
    assert not out.exists() and not (tmp_path / "ran").exists()


class Payload:
    """A pickle that creates a file when unpickled."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))

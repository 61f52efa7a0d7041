"""SD1.x model parts: CLIP tokenizer ids, text encoder, VAE shapes, checkpoint round trips and refusals."""
from __future__ import annotations

import hashlib
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from ccdm_core.errors import CCDMError
from ccdm_core.sd.checkpoint import POSITION_IDS_KEY, TEXT_PREFIX
from ccdm_core.sd.loader import SDModel, build_default_model, load_sd_checkpoint, save_sd_checkpoint
from ccdm_core.sd.text_encoder import CLIPTextConfig, CLIPTextEncoder, infer_text_config
from ccdm_core.sd.tokenizer import CLIPTokenizer
from ccdm_core.sd.vae import AutoencoderKL, tiny_vae_config

BOS, EOS = 49406, 49407
# Ids from OpenAI's reference tokenizer (clip's simple_tokenizer) for the same strings.
KNOWN_IDS = {
    "a photo of a cat": [320, 1125, 539, 320, 2368],
    "A  Photo\tOF a CAT!!": [320, 1125, 539, 320, 2368, 748],
    "masterpiece, best quality, (smile:1.2)": [12066, 267, 949, 3027, 267, 263, 3490, 281, 272, 269, 273, 264],
    "it's 3.14": [585, 568, 274, 269, 272, 275],
    "café &amp; 東京": [15304, 261, 48338, 21078, 361],
    "supercalifragilistic": [1642, 2857, 13093, 2076, 1561],
}


CALLS = []


def _record(note):
    CALLS.append(note)


class Trap:
    """Unpickling this would call `_record`; weights_only loading must refuse before any code runs."""

    def __reduce__(self):
        return _record, ("unpickled",)


@pytest.fixture(scope="module")
def tokenizer():
    return CLIPTokenizer.default()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The default model and its saved .safetensors path (with .yaml and .clip folder beside it)."""
    model = build_default_model(seed=0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_sd_checkpoint(model, path)
    return model, path


def _outputs(model: SDModel):
    """UNet, VAE and text encoder outputs on fixed inputs."""
    context = model.encode_prompts(["a photo of a cat", ""])
    torch.manual_seed(1)
    x, image = torch.randn(2, 4, 8, 8), torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        eps = model.unet(x, torch.tensor([10, 900]), context=context)
        return context, eps, model.vae.decode(x), model.vae.encode(image)


def _assert_same_model(a: SDModel, b: SDModel):
    for part in ("unet", "vae", "text_encoder"):
        sd_a, sd_b = getattr(a, part).state_dict(), getattr(b, part).state_dict()
        assert sd_a.keys() == sd_b.keys()
        assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a), part
    for out_a, out_b in zip(_outputs(a), _outputs(b)):
        assert torch.equal(out_a, out_b)
    assert (a.scale_factor, a.linear_start, a.linear_end, a.timesteps) == \
        (b.scale_factor, b.linear_start, b.linear_end, b.timesteps)


# Tokenizer


@pytest.mark.parametrize("text", sorted(KNOWN_IDS))
def test_tokenizer_matches_clip_ids(tokenizer, text):
    ids = tokenizer.encode([text])[0].tolist()
    n = len(KNOWN_IDS[text])
    assert ids[: n + 2] == [BOS] + KNOWN_IDS[text] + [EOS]
    assert ids[n + 2:] == [EOS] * (77 - n - 2)


def test_tokenizer_vocab_and_padding(tokenizer):
    assert len(tokenizer.vocab) == 49408 and tokenizer.vocab["a</w>"] == 320
    ids = tokenizer.encode(["a photo of a cat", ""], max_length=10)
    assert ids.dtype == torch.long and ids.shape == (2, 10)
    assert ids[0].tolist() == [BOS, 320, 1125, 539, 320, 2368, EOS, EOS, EOS, EOS]
    assert ids[1].tolist() == [BOS] + [EOS] * 9


def test_tokenizer_truncation_keeps_eos_last(tokenizer):
    ids = tokenizer.encode(["cat " * 100])[0].tolist()
    assert len(ids) == 77 and ids[0] == BOS and ids[-1] == EOS and ids[1:-1] == [2368] * 75


def test_tokenizer_rejects_bad_input(tokenizer):
    with pytest.raises(CCDMError, match="list of strings"):
        tokenizer.encode("a cat")
    with pytest.raises(CCDMError, match="max_length must be an integer >= 2"):
        tokenizer.encode(["a cat"], max_length=1)


def test_tokenizer_folder_round_trip(tokenizer, tmp_path):
    tokenizer.save_folder(tmp_path)
    assert (tmp_path / "merges.txt").read_text(encoding="utf-8").startswith("#version: 0.2\n")
    again = CLIPTokenizer.from_folder(tmp_path)
    texts = sorted(KNOWN_IDS)
    assert torch.equal(again.encode(texts), tokenizer.encode(texts))


def test_tokenizer_missing_files_are_named(tmp_path):
    with pytest.raises(CCDMError, match=r"clip-anytorch==2\.6\.0"):
        CLIPTokenizer.default(merges_path=tmp_path / "absent.txt.gz")
    with pytest.raises(CCDMError, match="lacks vocab.json"):
        CLIPTokenizer.from_folder(tmp_path)


# Text encoder and VAE


def test_text_encoder_shape_keys_and_causality():
    torch.manual_seed(0)
    config = CLIPTextConfig(width=64, layers=2, heads=2)
    encoder = CLIPTextEncoder(config).eval()
    tokens = torch.randint(0, 49408, (2, 77))
    with torch.no_grad():
        out = encoder(tokens)
        changed = tokens.clone()
        changed[:, 40:] = 7
        out_changed = encoder(changed)
    assert out.shape == (2, 77, 64)
    assert torch.equal(out[:, :40], out_changed[:, :40]) and not torch.allclose(out[:, 40:], out_changed[:, 40:])
    keys = set(encoder.state_dict())
    assert "text_model.encoder.layers.1.self_attn.out_proj.bias" in keys
    assert "text_model.final_layer_norm.weight" in keys and len(keys) == 2 + 2 * 16 + 2
    assert infer_text_config(encoder.state_dict()) == CLIPTextConfig(width=64, layers=2, heads=1)
    assert infer_text_config(encoder.state_dict(), heads=2) == config


def test_text_encoder_config_is_validated():
    with pytest.raises(CCDMError, match="divisible by heads"):
        CLIPTextConfig(width=64, heads=3)
    with pytest.raises(CCDMError, match="activation must be one of"):
        CLIPTextConfig(activation="relu")


def test_vae_shapes_and_sampling():
    torch.manual_seed(0)
    vae = AutoencoderKL(tiny_vae_config(), embed_dim=4).eval()
    image = torch.rand(2, 3, 64, 48) * 2 - 1
    with torch.no_grad():
        mean = vae.encode(image)
        sample_a = vae.encode(image, generator=torch.Generator().manual_seed(3))
        sample_b = vae.encode(image, generator=torch.Generator().manual_seed(3))
        decoded = vae.decode(mean)
    assert mean.shape == (2, 4, 8, 6) and decoded.shape == (2, 3, 64, 48)
    assert torch.equal(sample_a, sample_b) and not torch.equal(sample_a, mean)
    with pytest.raises(CCDMError, match="multiples of 8"):
        vae.encode(torch.zeros(1, 3, 60, 64))
    with pytest.raises(CCDMError, match=r"latents must be \(n, 4, h, w\)"):
        vae.decode(torch.zeros(1, 3, 8, 8))


# Default model, save and load


def test_default_model_is_deterministic_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a, b, c = build_default_model(0), build_default_model(0), build_default_model(1)
    assert torch.equal(torch.get_rng_state(), state)
    sd_a, sd_b, sd_c = a.unet.state_dict(), b.unet.state_dict(), c.unet.state_dict()
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    assert not all(torch.equal(sd_a[k], sd_c[k]) for k in sd_a)
    context, eps, _, _ = _outputs(a)
    assert context.shape == (2, 77, 128) and eps.abs().mean() > 0  # residual outputs are not zero-initialised


def test_safetensors_round_trip_is_exact(saved):
    model, path = saved
    loaded = load_sd_checkpoint(path)
    _assert_same_model(model, loaded)
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() and loaded.source == str(path)
    assert loaded.text_encoder.config == model.text_encoder.config
    config = yaml.safe_load(path.with_suffix(".yaml").read_text())["model"]
    assert config["target"] == "ldm.models.diffusion.ddpm.LatentDiffusion"
    assert config["params"]["unet_config"]["params"]["context_dim"] == 128
    assert config["params"]["first_stage_config"]["params"]["lossconfig"] == {"target": "torch.nn.Identity"}
    clip_folder = path.with_name("tiny.clip")
    assert config["params"]["cond_stage_config"]["params"]["version"] == str(clip_folder.resolve())
    assert {"vocab.json", "merges.txt", "config.json"} <= {p.name for p in clip_folder.iterdir()}
    keys = load_file(str(path)).keys()
    assert all(k.startswith(("model.diffusion_model.", "first_stage_model.", TEXT_PREFIX)) for k in keys)


def test_ckpt_round_trip_with_extra_keys(saved, tmp_path):
    model, path = saved
    state_dict = load_file(str(path))
    state_dict[TEXT_PREFIX + POSITION_IDS_KEY] = torch.arange(77)[None]
    state_dict["alphas_cumprod"] = torch.linspace(1, 0, 1000)
    target = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": state_dict, "global_step": 5}, target)
    shutil.copy(path.with_suffix(".yaml"), target.with_suffix(".yaml"))
    _assert_same_model(model, load_sd_checkpoint(target))


def test_missing_and_unexpected_keys_are_reported(saved, tmp_path):
    _, path = saved
    state_dict = load_file(str(path))
    del state_dict["first_stage_model.quant_conv.bias"]
    state_dict["first_stage_model.extra.weight"] = torch.zeros(1)
    target = tmp_path / "tiny.safetensors"
    save_file(state_dict, str(target))
    shutil.copy(path.with_suffix(".yaml"), target.with_suffix(".yaml"))
    with pytest.raises(CCDMError, match=r"VAE weights do not fit.*missing 1 keys \(quant_conv.bias\); "
                                        r"unexpected 1 keys \(extra.weight\)"):
        load_sd_checkpoint(target)


def test_without_yaml_the_sd15_architecture_is_assumed(saved, tmp_path):
    _, path = saved
    target = tmp_path / "bare.safetensors"
    shutil.copy(path, target)
    with pytest.raises(CCDMError, match="context_dim 768 differs from the text encoder width 128.*bare.yaml"):
        load_sd_checkpoint(target)


def _refusal(tmp_path, state_dict) -> str:
    target = tmp_path / "other.safetensors"
    save_file(state_dict, str(target))
    with pytest.raises(CCDMError) as info:
        load_sd_checkpoint(target)
    return str(info.value)


def test_refuses_sdxl(tmp_path):
    message = _refusal(tmp_path, {"conditioner.embedders.0.transformer.text_model.final_layer_norm.weight":
                                  torch.ones(4), "model.diffusion_model.out.2.bias": torch.zeros(4)})
    assert "SDXL" in message and "conditioner.*" in message and "1.x" in message
    assert "in the WebUI extension" in message  # where SDXL checkpoints are animated


def test_refuses_sd2(tmp_path):
    message = _refusal(tmp_path, {"cond_stage_model.model.positional_embedding": torch.zeros(77, 8)})
    assert "2.x" in message and "cond_stage_model.model.*" in message
    key = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
    message = _refusal(tmp_path, {key: torch.zeros(320, 1024)})
    assert "2.x" in message and "context_dim 1024" in message


def test_refuses_non_sd_safetensors(tmp_path):
    torch.manual_seed(0)
    message = _refusal(tmp_path, {"encoder.weight": torch.randn(4, 4), "head.bias": torch.randn(4)})
    assert "not a Stable Diffusion 1.x checkpoint" in message and "encoder.weight" in message


def test_refuses_truncated_file(saved, tmp_path):
    _, path = saved
    target = tmp_path / "cut.safetensors"
    target.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CCDMError, match=r"cut.safetensors: unreadable safetensors file \("):
        load_sd_checkpoint(target)
    ckpt = tmp_path / "cut.ckpt"
    torch.save({"state_dict": {"a": torch.zeros(1000)}}, ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:600])
    with pytest.raises(CCDMError, match=r"cut.ckpt: unreadable checkpoint \("):
        load_sd_checkpoint(ckpt)


def test_refuses_pickle_needing_code(tmp_path):
    target = tmp_path / "code.ckpt"
    torch.save({"state_dict": Trap()}, target)
    with pytest.raises(CCDMError, match=r"code.ckpt: refused, the pickle needs code to load.*weights_only=True"):
        load_sd_checkpoint(target)
    assert CALLS == []


def test_refuses_unknown_suffix_and_missing_file(tmp_path):
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    with pytest.raises(CCDMError, match=r"unsupported file type \.gguf; accepted: \.safetensors, \.ckpt"):
        load_sd_checkpoint(tmp_path / "model.gguf")
    with pytest.raises(CCDMError, match="no such file"):
        load_sd_checkpoint(tmp_path / "model.safetensors")
    with pytest.raises(CCDMError, match="writes .safetensors only"):
        save_sd_checkpoint(build_default_model(), tmp_path / "model.ckpt")

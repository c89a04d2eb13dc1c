"""inject_lora / unload_lora / lora_parameters on the tiny Llama, checked against peft.get_peft_model (marked
peft_parity) and by their own invariants."""
import logging

import pytest
import torch
from test_lora_layer import quantize_model
from transformers import AutoModelForCausalLM

from lora import LoRAConfig, LoRALinear, inject_lora, lora_parameters, parameter_counts, unload_lora
from lora.inject import lora_layers

QKVO = ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj", "model.layers.0.self_attn.v_proj",
        "model.layers.0.self_attn.o_proj"]


def load(path):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def peft_twin(ours, base, config: LoRAConfig):
    """peft model over `base` (same weights as ours' base) holding ours' adapter weights; skips without peft."""
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model

    targets = config.target_modules if isinstance(config.target_modules, str) else list(config.target_modules)
    pm = get_peft_model(base, LoraConfig(r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout,
                                         target_modules=targets, use_rslora=config.use_rslora,
                                         use_dora=config.use_dora))
    with torch.no_grad():
        for name, layer in lora_layers(ours).items():
            theirs = pm.base_model.model.get_submodule(name)
            theirs.lora_A["default"].weight.copy_(layer.lora_A.weight)
            theirs.lora_B["default"].weight.copy_(layer.lora_B.weight)
            if layer.lora_magnitude_vector is not None:
                theirs.lora_magnitude_vector["default"].weight.copy_(layer.lora_magnitude_vector)
    return pm


def randomize(model, seed=0):
    """Give B (and DoRA magnitudes) nonzero values so adapters change the output."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.weight.normal_(0, 0.05)
            if layer.lora_magnitude_vector is not None:
                layer.lora_magnitude_vector.mul_(1 + 0.1 * torch.rand_like(layer.lora_magnitude_vector))
    return model


def peft_wrapped(pm):
    return sorted(n.removeprefix("base_model.model.") for n, m in pm.named_modules() if hasattr(m, "lora_A")
                  and isinstance(getattr(m, "lora_A"), torch.nn.ModuleDict))


@pytest.mark.peft_parity
@pytest.mark.parametrize("targets,count", [(("q_proj", "k_proj", "v_proj", "o_proj"), 8), ("all-linear", 14),
                                           (r".*\.0\.self_attn\.(q|v)_proj", 2)])
def test_targets_match_peft(tiny_llama_dir, targets, count):
    ours, theirs = load(tiny_llama_dir), load(tiny_llama_dir)
    config = LoRAConfig(r=4, alpha=8, target_modules=targets)
    names = inject_lora(ours, config)
    assert len(names) == count and "lm_head" not in names
    assert all(isinstance(ours.get_submodule(n), LoRALinear) for n in names)
    pm = peft_twin(ours, theirs, config)
    assert sorted(names) == peft_wrapped(pm)
    assert parameter_counts(ours) == pm.get_nb_trainable_parameters()


def test_freezes_everything_but_lora_and_logs_counts(tiny_llama, caplog):
    with caplog.at_level(logging.INFO, logger="lora.inject"):
        names = inject_lora(tiny_llama, LoRAConfig(r=4, use_dora=True))
    assert names[:4] == QKVO
    trainable = {n for n, p in tiny_llama.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(("lora_A.weight", "lora_B.weight", "lora_magnitude_vector"))
                             for n in trainable)
    # r * (in + out) per layer: q,o 64->64; k,v 64->32; DoRA adds `out` magnitudes; two layers.
    expected = 2 * sum(4 * (64 + out) + out for out in (64, 32, 32, 64))
    assert parameter_counts(tiny_llama)[0] == expected
    assert f"trainable params: {expected:,d}" in caplog.text
    assert tiny_llama.lora_config.r == 4
    assert not any(layer.training for layer in lora_layers(tiny_llama).values())  # eval model: no dropout


@pytest.mark.peft_parity
def test_same_seed_gives_peft_initial_weights(tiny_llama_dir):
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model

    ours, theirs = load(tiny_llama_dir), load(tiny_llama_dir)
    torch.manual_seed(123)
    inject_lora(ours, LoRAConfig(r=4, alpha=8))
    torch.manual_seed(123)
    pm = get_peft_model(theirs, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    for name, layer in lora_layers(ours).items():
        assert torch.equal(layer.lora_A.weight, pm.base_model.model.get_submodule(name).lora_A["default"].weight)
        assert not layer.lora_B.weight.any()


@pytest.mark.peft_parity
@pytest.mark.parametrize("variant", [{}, {"use_dora": True}, {"use_rslora": True, "target_modules": "all-linear"}])
def test_model_logits_and_grads_match_peft(tiny_llama_dir, variant):
    ours, theirs = load(tiny_llama_dir), load(tiny_llama_dir)
    config = LoRAConfig(r=4, alpha=8, **variant)
    inject_lora(ours, config)
    randomize(ours)
    pm = peft_twin(ours, theirs, config)
    ids = torch.randint(3, 200, (2, 12))
    a, b = ours(input_ids=ids).logits, pm(input_ids=ids).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    a.logsumexp(-1).sum().backward(), b.logsumexp(-1).sum().backward()
    for name, layer in lora_layers(ours).items():
        theirs_layer = pm.base_model.model.get_submodule(name)
        torch.testing.assert_close(layer.lora_A.weight.grad, theirs_layer.lora_A["default"].weight.grad,
                                   atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(layer.lora_B.weight.grad, theirs_layer.lora_B["default"].weight.grad,
                                   atol=1e-5, rtol=1e-4)


@pytest.mark.peft_parity
def test_4bit_parameter_count_matches_peft(tiny_llama_dir):
    ours = quantize_model(load(tiny_llama_dir), "nf4")
    theirs = quantize_model(load(tiny_llama_dir), "nf4")
    config = LoRAConfig(r=4, alpha=8, target_modules="all-linear")
    inject_lora(ours, config)
    pm = peft_twin(ours, theirs, config)
    trainable, total = parameter_counts(ours)
    assert (trainable, total) == pm.get_nb_trainable_parameters()
    dense_total = sum(p.numel() for p in load(tiny_llama_dir).parameters())
    assert total == dense_total + trainable  # 4-bit weights counted as their unpacked size


def test_lora_parameters_split_for_lora_plus(tiny_llama):
    inject_lora(tiny_llama, LoRAConfig(r=4, use_dora=True))
    a_side, b_side = lora_parameters(tiny_llama, split=True)
    layers = list(lora_layers(tiny_llama).values())
    assert len(a_side) == 2 * len(layers) and len(b_side) == len(layers)
    assert {id(p) for p in b_side} == {id(layer.lora_B.weight) for layer in layers}
    assert {id(layer.lora_magnitude_vector) for layer in layers} <= {id(p) for p in a_side}
    assert {id(p) for p in lora_parameters(tiny_llama)} == {id(p) for p in a_side + b_side}
    assert {id(p) for p in a_side + b_side} == {id(p) for p in tiny_llama.parameters() if p.requires_grad}


def test_unload_restores_original_modules(tiny_llama):
    originals = {n: tiny_llama.get_submodule(n) for n in QKVO}
    ids = torch.randint(3, 200, (1, 9))
    before = tiny_llama(input_ids=ids).logits
    inject_lora(tiny_llama, LoRAConfig(r=4))
    randomize(tiny_llama)
    assert not torch.allclose(tiny_llama(input_ids=ids).logits, before)
    unload_lora(tiny_llama)
    assert all(tiny_llama.get_submodule(n) is m for n, m in originals.items())
    assert not lora_layers(tiny_llama) and not hasattr(tiny_llama, "lora_config")
    assert torch.equal(tiny_llama(input_ids=ids).logits, before)


def test_bad_targets_and_double_injection(tiny_llama):
    with pytest.raises(ValueError, match="matched no linear layer"):
        inject_lora(tiny_llama, LoRAConfig(target_modules="q_proj"))  # a regex must match the whole name
    with pytest.raises(ValueError, match="linear layers only"):
        inject_lora(tiny_llama, LoRAConfig(target_modules=("self_attn",)))
    with pytest.raises(ValueError, match="not a valid regex"):
        LoRAConfig(target_modules="(q_proj")
    inject_lora(tiny_llama, LoRAConfig())
    with pytest.raises(ValueError, match="already has LoRA"):
        inject_lora(tiny_llama, LoRAConfig())


def test_config_validation_and_scaling(tiny_llama):
    inject_lora(tiny_llama, LoRAConfig(r=16, alpha=32, target_modules=("q_proj",)))
    assert {layer.scaling for layer in lora_layers(tiny_llama).values()} == {2.0}
    unload_lora(tiny_llama)
    inject_lora(tiny_llama, LoRAConfig(r=16, alpha=32, use_rslora=True, target_modules=("q_proj",)))
    assert {layer.scaling for layer in lora_layers(tiny_llama).values()} == {8.0}
    for bad in ({"r": 0}, {"alpha": 0}, {"dropout": 1.0}, {"init": "pissa"}, {"target_modules": ()}):
        with pytest.raises(ValueError):
            LoRAConfig(**bad)


@pytest.mark.parametrize("targets", [["q_proj", "v_proj"], r"model\.layers\.1\.mlp\.(up|down)_proj"])
def test_layer_by_layer_injection_draws_the_whole_models_weights(tiny_llama_dir, targets):
    """inject_lora(within=layer) for each decoder layer in order, as FSDP's loading does before sharding each: the
    layers the whole-model call wraps (a regex still matching whole names), with its initial weights under one
    seed; a layer with nothing to wrap is left alone, and only the layer's own parameters are touched."""
    config = LoRAConfig(r=4, alpha=8, target_modules=targets)
    whole, by_layer = load(tiny_llama_dir), load(tiny_llama_dir)
    torch.manual_seed(0)
    expected = inject_lora(whole, config)
    torch.manual_seed(0)
    by_layer.lm_head.weight.requires_grad_(True)
    names = [n for layer in by_layer.model.layers for n in inject_lora(by_layer, config, within=layer)]
    assert names == expected and lora_layers(by_layer).keys() == lora_layers(whole).keys()
    for (name, p), q in zip(whole.named_parameters(), by_layer.parameters()):
        if "lora_" in name:
            assert torch.equal(p, q), name
    assert by_layer.lm_head.weight.requires_grad

"""training.speed: the fixed-shape loss that CUDA graphs capture equals the eager completion loss."""
import pytest
import torch

from data import CompletionCollator
from lora import LoRAConfig, inject_lora
from training.loss import CompletionLossModel, StaticCompletionLoss, completion_loss_sum
from training.speed import CudaGraphLoss


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_static_loss_matches_eager_loss_and_gradients(tiny_llama, tiny_tokenizer, attention):
    # The static loss passes its own causal mask: boolean for SDPA, additive for eager attention.
    tiny_llama.set_attn_implementation(attention)
    assert tiny_llama.config._attn_implementation == attention
    inject_lora(tiny_llama, LoRAConfig(r=4, alpha=8))
    for name, p in tiny_llama.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    tiny_llama.train()
    examples = [{"prompt": "How much does this cost?\n\nA drill\n\nPrice is $", "completion": "129.00"},
                {"prompt": "How much does this cost?\n\nStrings\n\nPrice is $", "completion": "7.00"}]
    # Padded to a fixed length as train.py does when cuda_graphs is on.
    batch = CompletionCollator(tiny_tokenizer, max_length=64, pad_to_multiple_of=64)(examples)
    graph = CudaGraphLoss(CompletionLossModel(tiny_llama), max_supervised_per_row=8)
    args, n_static = graph._inputs(batch["input_ids"], batch["labels"])
    assert args[1].numel() == 2 * 8 and float(args[3].sum()) == int(batch["num_supervised"])

    assert int(n_static) == int(batch["num_supervised"])
    assert_static_equals_eager(tiny_llama, batch, args, n_static)


def assert_static_equals_eager(model, batch, args, n_static):
    """StaticCompletionLoss on `args` gives completion_loss_sum's loss, token count and gradients on `batch`."""
    static = StaticCompletionLoss(model)(*args)
    static.backward()
    grads_static = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    eager, n_eager = completion_loss_sum(model, batch)
    eager.backward()
    assert int(n_static) == int(n_eager)
    torch.testing.assert_close(static, eager, rtol=1e-5, atol=1e-5)
    for n, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(grads_static[n], p.grad, rtol=1e-4, atol=1e-6)


def loss_and_gradients(fn, params, batch):
    """(loss, each parameter's gradient) of one call of `fn` on `batch`, from cleared gradients."""
    for p in params:
        p.grad = None
    loss, _ = fn(batch["input_ids"], batch["attention_mask"], batch["labels"])
    loss.backward()
    return float(loss), [p.grad.clone() for p in params]


def gemma_with_short_window(path, attention="sdpa", device="cpu"):
    """A tiny Gemma 3 whose sliding window (4) is shorter than the batches below, with a LoRA that does something."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from quant.tiny import build_tiny_gemma

    build_tiny_gemma(path, sliding_window=4, layers=2)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=attention).to(device)
    inject_lora(model, LoRAConfig(r=4, alpha=8))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    batch = CompletionCollator(AutoTokenizer.from_pretrained(path), max_length=64, pad_to_multiple_of=32)(
        [{"prompt": f"How much does this cost?\n\nA long item description number {i}\n\nPrice is $",
          "completion": f"{i}9.00"} for i in range(2)])
    assert batch["input_ids"].shape[1] > 3 * 4
    return model.train(), {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "labels")}


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_static_loss_keeps_gemmas_sliding_window(tmp_path, attention):
    """The static loss passes its own masks: on a Gemma 3 whose sliding window is shorter than the batch,
    its sliding layers must still see only the window, as in the eager loss that transformers masks."""
    model, batch = gemma_with_short_window(tmp_path / "gemma", attention)
    args, n_static = CudaGraphLoss(CompletionLossModel(model))._inputs(batch["input_ids"], batch["labels"])
    assert_static_equals_eager(model, batch, args, n_static)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_graphed_gemma_keeps_its_sliding_window(tmp_path):
    """Captured and replayed on a GPU, the Gemma loss and gradients are eager's (window shorter than the batch)."""
    model, batch = gemma_with_short_window(tmp_path / "gemma", "sdpa", "cuda")
    params = [p for p in model.parameters() if p.requires_grad]

    def step(fn):
        return loss_and_gradients(fn, params, batch)

    eager_loss, eager = step(CompletionLossModel(model))
    graph = CudaGraphLoss(CompletionLossModel(model), max_supervised_per_row=8)
    step(graph)  # capture and warm up
    loss, grads = step(graph)
    assert loss == pytest.approx(eager_loss, rel=1e-4)
    for got, want in zip(grads, eager):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_static_inputs_refuse_rows_with_more_answer_tokens_than_sized(tiny_llama, tiny_tokenizer):
    batch = CompletionCollator(tiny_tokenizer, max_length=64)(
        [{"prompt": "Price is $", "completion": "123456789.00"}])
    graph = CudaGraphLoss(CompletionLossModel(tiny_llama), max_supervised_per_row=4)
    try:
        graph._inputs(batch["input_ids"], batch["labels"])
    except ValueError as e:
        assert "supervised tokens" in str(e)
    else:
        raise AssertionError("expected a ValueError")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_graphed_gradients_accumulate_over_micro_batches(tiny_llama, tiny_tokenizer):
    """Two replays in one step sum their gradients, as two eager backward passes do.

    A replay rewrites the graph's static gradient buffers; autograd may have handed those very
    buffers to the parameters as .grad on the first replay, so without CudaGraphLoss's copy the
    second replay would overwrite the first micro-batch's gradient (seen on an H200: 2 GPUs x
    accumulation 1 and 1 GPU x accumulation 2 drifted 7% apart in 50 steps; identical with it).
    """
    model = tiny_llama.cuda()
    inject_lora(model, LoRAConfig(r=4, alpha=8))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    model.train()
    collate = CompletionCollator(tiny_tokenizer, max_length=64, pad_to_multiple_of=64)
    micro = [collate([{"prompt": f"How much does this cost?\n\nItem {i}\n\nPrice is $", "completion": f"{i}9.00"}
                      for i in range(j, j + 2)]) for j in (0, 2)]
    micro = [{k: v.cuda() for k, v in b.items() if k in ("input_ids", "attention_mask", "labels")} for b in micro]
    params = [p for p in model.parameters() if p.requires_grad]

    def step(fn):
        for p in params:
            p.grad = None
        for b in micro:
            loss, _ = fn(b["input_ids"], b["attention_mask"], b["labels"])
            loss.backward()
        return [p.grad.clone() for p in params]

    eager = step(CompletionLossModel(model))
    graph = CudaGraphLoss(CompletionLossModel(model), max_supervised_per_row=8)
    step(graph)  # capture and warm up
    for got, want in zip(step(graph), eager):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_compiled_layers_inside_cuda_graphs_keep_gradients_and_fresh_dropout(tiny_llama, tiny_tokenizer):
    """train.compile + train.cuda_graphs: the captured Triton kernels give eager's gradients,
    and the captured dropout draws a new mask on every replay (its seeds are not baked in)."""
    from training.speed import compile_decoder_layers

    torch._dynamo.reset()
    model = tiny_llama.cuda()
    inject_lora(model, LoRAConfig(r=4, alpha=8, dropout=0.5))
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    for layer in dropouts:
        layer.p = 0.0  # first the exact comparison
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    model.train()
    batch = CompletionCollator(tiny_tokenizer, max_length=64, pad_to_multiple_of=64)(
        [{"prompt": f"How much does this cost?\n\nItem {i}\n\nPrice is $", "completion": f"{i}9.00"} for i in range(2)])
    batch = {k: v.cuda() for k, v in batch.items() if k in ("input_ids", "attention_mask", "labels")}
    params = [p for p in model.parameters() if p.requires_grad]

    def step(fn):
        return loss_and_gradients(fn, params, batch)

    eager_loss, eager = step(CompletionLossModel(model))
    compile_decoder_layers(model)
    graph = CudaGraphLoss(CompletionLossModel(model), max_supervised_per_row=8)
    step(graph)  # compile, capture and warm up
    loss, grads = step(graph)
    assert loss == pytest.approx(eager_loss, rel=1e-4)
    for got, want in zip(grads, eager):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-5)

    assert dropouts
    for layer in dropouts:
        layer.p = 0.5
    torch._dynamo.reset()
    graph = CudaGraphLoss(CompletionLossModel(model), max_supervised_per_row=8)
    losses = {step(graph)[0] for _ in range(4)}
    assert len(losses) == 4
    torch._dynamo.reset()

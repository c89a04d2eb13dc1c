"""LoRALinear: a frozen linear layer plus a trainable low-rank update, the whole of LoRA in one module."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from utils.compat import unpack_cpu_4bit

from .config import LoRAConfig

# Wrappers that insert a level into module names: FSDP units and activation checkpointing.
WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.")


def unwrapped_name(name: str) -> str:
    """A qualified module or parameter name with wrapper levels (FSDP, checkpointing) left out."""
    for prefix in WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


def dequantized_weight(base: nn.Linear) -> torch.Tensor:
    """The base layer's weight as a dense (out, in) tensor: as is for nn.Linear, dequantized for bitsandbytes."""
    weight = base.weight
    kind = type(weight).__name__
    if kind == "Params4bit":
        import bitsandbytes.functional as bnbF

        return bnbF.dequantize_4bit(*unpack_cpu_4bit(weight))
    if kind == "Int8Params":
        import bitsandbytes.functional as bnbF

        scb = weight.SCB if weight.SCB is not None else base.state.SCB
        return bnbF.int8_vectorwise_dequant(weight.data, scb)
    return weight


class LoRALinear(nn.Module):
    """A frozen linear layer W (nn.Linear, bitsandbytes Linear4bit or Linear8bitLt) plus a low-rank update.

        y = W x + s * B A dropout(x)        s = alpha / r   (alpha / sqrt(r) with rsLoRA)

              x ----------------> [ W  (out x in), frozen, maybe 4/8-bit ] ----> (+) --> y
              |                                                                   ^
              +--> dropout --> [ A (r x in) ] --> [ B (out x r) ] --> * s --------+

    A starts kaiming-uniform (a = sqrt(5)) or normal with std 1/r ("gaussian"), B starts at zero, so the
    layer starts equal to W. With DoRA (use_dora), the weight is split into a trainable magnitude m
    (one per output row) and a direction:

        y = m / ||W + s B A||_row * (W x + s B A dropout(x))      (the norm is treated as a constant)

    The numbers follow peft 0.21: x is cast to A's dtype (float32 by default), the sum is cast back
    to the dtype of W x, and with DoRA and active dropout W x is recomputed on the dropped-out x.
    (peft's bitsandbytes layers round the update to W x's dtype before adding, outside autocast; with
    a bf16 compute dtype that differs by at most one bf16 ulp. Under autocast both are bitwise equal.)
    """

    # Defaults are LoRAConfig's (a dataclass keeps each field's default as a class attribute): one set.
    def __init__(self, base: nn.Linear, r: int = LoRAConfig.r, alpha: float = LoRAConfig.alpha,
                 dropout: float = LoRAConfig.dropout, use_rslora: bool = LoRAConfig.use_rslora,
                 use_dora: bool = LoRAConfig.use_dora, init: str = LoRAConfig.init) -> None:
        super().__init__()
        self.base_layer = base
        self.in_features, self.out_features = base.in_features, base.out_features
        self.r = r
        self.scaling = alpha / (math.sqrt(r) if use_rslora else r)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        # Built as peft builds them (two nn.Linear, then A re-initialised) so one seed gives peft's weights.
        device = base.weight.device
        self.lora_A = nn.Linear(self.in_features, r, bias=False, device=device)
        self.lora_B = nn.Linear(r, self.out_features, bias=False, device=device)
        if init == "kaiming":
            nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        elif init == "gaussian":
            nn.init.normal_(self.lora_A.weight, std=1 / r)
        else:
            raise ValueError(f"LoRA init must be 'kaiming' or 'gaussian', got {init!r}")
        nn.init.zeros_(self.lora_B.weight)
        self.register_parameter("lora_magnitude_vector", None)
        if use_dora:
            with torch.no_grad():
                norm = torch.linalg.norm(dequantized_weight(base).float() + self.delta_weight(), dim=1)
            self.lora_magnitude_vector = nn.Parameter(norm)

    @property
    def weight(self) -> torch.Tensor:
        """The base layer's weight (code that reads `.weight.dtype` or `.weight.device` keeps working)."""
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        """The base layer's bias."""
        return self.base_layer.bias

    def adapter_parameters(self) -> dict[str, nn.Parameter]:
        """The one list of this layer's trainable parameters, by name under the layer (peft's keys).

        Everything the layer holds outside `base_layer`: lora_A.weight, lora_B.weight and, with
        DoRA, lora_magnitude_vector. A parameter added to this class (or a subclass) joins the
        list by itself, so it is trained, clipped, all-reduced, saved and loaded with no other
        edit. Names starting with "lora_B" get LoRA+'s learning rate; all others the base lr.
        """
        return {unwrapped_name(name): p for name, p in self.named_parameters() if not name.startswith("base_layer.")}

    def delta_weight(self) -> torch.Tensor:
        """s * B @ A, the (out, in) update LoRA adds to W."""
        return self.scaling * (self.lora_B.weight @ self.lora_A.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        x = x.to(self.lora_A.weight.dtype)
        if self.lora_magnitude_vector is None:
            update = self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling
        else:
            update = self._dora_update(x, result)
        return (result + update).to(result.dtype)

    def _dora_update(self, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        """m/||W + sBA|| * (Wx + sBAx) - Wx, so that adding it to the base output gives DoRA's output."""
        weight = dequantized_weight(self.base_layer).to(x.dtype)
        with torch.no_grad():  # DoRA paper, section 4.3: the norm is a constant for backprop, saving memory
            norm = torch.linalg.norm(weight + self.delta_weight(), dim=1)
        scale = (self.lora_magnitude_vector / norm).view(1, -1)
        if self.training and isinstance(self.lora_dropout, nn.Dropout):
            x = self.lora_dropout(x)
            base = F.linear(x, weight)
        else:
            base = result if self.base_layer.bias is None else result - self.base_layer.bias
        return (scale - 1) * base + scale * self.lora_B(self.lora_A(x)) * self.scaling

    def merged_weight(self) -> torch.Tensor:
        """The dense float32 (out, in) weight that gives this layer's output with no adapter."""
        with torch.no_grad():
            weight = dequantized_weight(self.base_layer).float() + self.delta_weight().float()
            if self.lora_magnitude_vector is not None:
                weight = (self.lora_magnitude_vector.float() / torch.linalg.norm(weight, dim=1)).view(-1, 1) * weight
        return weight

    def extra_repr(self) -> str:
        return f"r={self.r}, scaling={self.scaling:g}, dora={self.lora_magnitude_vector is not None}"

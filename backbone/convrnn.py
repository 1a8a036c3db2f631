"""Convolutional GRU, as in DPC's ``backbone/convrnn.py``.

Parameter names match DPC (``cell_list.0.reset_gate.weight`` ...). DPC also registered every
cell a second time as ``ConvGRUCell_00`` ...; we keep ``cell_list`` only, and the checkpoint
loader maps the duplicate names away.
"""

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["ConvGRUCell", "ConvGRU"]


class ConvGRUCell(nn.Module):
    """One ConvGRU step; each gate is a conv over ``cat[input, hidden]``.

    Args:
        input_size: channels of the input map.
        hidden_size: channels of the hidden state.
        kernel_size: odd kernel of the gate convolutions (padding ``kernel_size // 2``).
    """

    def __init__(self, input_size: int, hidden_size: int, kernel_size: int) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.kernel_size = kernel_size
        padding = kernel_size // 2
        in_ch = input_size + hidden_size
        self.reset_gate = nn.Conv2d(in_ch, hidden_size, kernel_size, padding=padding)
        self.update_gate = nn.Conv2d(in_ch, hidden_size, kernel_size, padding=padding)
        self.out_gate = nn.Conv2d(in_ch, hidden_size, kernel_size, padding=padding)
        for gate in (self.reset_gate, self.update_gate, self.out_gate):
            nn.init.orthogonal_(gate.weight)
            nn.init.zeros_(gate.bias)

    def forward(
        self, input_tensor: torch.Tensor, hidden_state: torch.Tensor | None
    ) -> torch.Tensor:
        """Args:
            input_tensor: ``[B, input_size, H, W]``.
            hidden_state: ``[B, hidden_size, H, W]``, or None for zeros.

        Returns the new hidden state ``[B, hidden_size, H, W]``.
        """
        if hidden_state is None:
            b, _, h, w = input_tensor.shape
            hidden_state = input_tensor.new_zeros(b, self.hidden_size, h, w)
        combined = torch.cat([input_tensor, hidden_state], dim=1)
        update = torch.sigmoid(self.update_gate(combined))
        reset = torch.sigmoid(self.reset_gate(combined))
        out = torch.tanh(self.out_gate(torch.cat([input_tensor, hidden_state * reset], dim=1)))
        return hidden_state * (1 - update) + out * update


class ConvGRU(nn.Module):
    """Stack of ConvGRU cells run over time, with dropout on every hidden state (as DPC).

    Args:
        input_size: channels of the input maps.
        hidden_size: channels of every layer's hidden state.
        kernel_size: odd kernel of the gate convolutions.
        num_layers: number of stacked cells.
        dropout: dropout probability applied to each hidden state at every step.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        kernel_size: int,
        num_layers: int = 1,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.kernel_size = kernel_size
        self.num_layers = num_layers
        self.cell_list = nn.ModuleList(
            ConvGRUCell(input_size if i == 0 else hidden_size, hidden_size, kernel_size)
            for i in range(num_layers)
        )
        self.dropout_layer = nn.Dropout(p=dropout)

    def forward(
        self,
        x: torch.Tensor,
        hidden_state: torch.Tensor | Sequence[torch.Tensor | None] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Args:
            x: input sequence ``[B, T, input_size, H, W]``.
            hidden_state: initial state per layer, indexed by layer first as in DPC
                (``[num_layers, B, hidden_size, H, W]`` or a list); None starts from zeros.

        Returns ``(layer_output [B, T, hidden_size, H, W]`` of the last layer,
        ``last_state [B, num_layers, hidden_size, H, W])``.
        """
        if x.dim() != 5:
            raise ValueError(f"ConvGRU expects x as [B, T, C, H, W], got shape {tuple(x.shape)}")
        if hidden_state is None:
            hidden_state = [None] * self.num_layers
        if len(hidden_state) != self.num_layers:
            raise ValueError(
                f"hidden_state must hold {self.num_layers} layer states, got {len(hidden_state)}"
            )
        layer_input = x
        last_states = []
        for cell, hidden in zip(self.cell_list, hidden_state):
            outputs = []
            for t in range(layer_input.shape[1]):
                hidden = self.dropout_layer(cell(layer_input[:, t], hidden))
                outputs.append(hidden)
            layer_input = torch.stack(outputs, dim=1)  # [B, T, hidden_size, H, W]
            last_states.append(hidden)
        return layer_input, torch.stack(last_states, dim=1)

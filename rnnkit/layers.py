"""``rnnkit.RNN`` and ``rnnkit.BidirectionalRNN``: cells and their runner as one ``nn.Module``."""

from __future__ import annotations

from typing import Any, Iterator

from torch import nn

from ._checks import check_is_cell
from .rnn import bidirectional_dynamic_rnn, dynamic_rnn

__all__ = ["BidirectionalRNN", "RNN"]


class RNN(nn.Module):
    """Runs ``cell`` over a whole sequence with :func:`rnnkit.dynamic_rnn`.

    Example::

        rnn = rnnkit.RNN(rnnkit.MultiRNNCell([rnnkit.LSTMCell(128), rnnkit.GRUCell(128)]))
        outputs, state = rnn(x, sequence_length=lengths)           # x: [B, T, D]
        outputs, state = rnn(x2, initial_state=rnnkit.detach_state(state))

    Args:
        cell: any rnnkit cell (a stack, a wrapper, ...); its weights are this module's.
        time_major: inputs and outputs are ``[T, B, D]`` instead of ``[B, T, D]``.
    """

    cell: Any  # an RNNCell

    def __init__(self, cell: nn.Module, time_major: bool = False, backend: str = "auto") -> None:
        super().__init__()
        check_is_cell(cell, "cell")
        self.cell = cell
        self.time_major = bool(time_major)
        self.backend = backend

    def forward(self, inputs: Any, sequence_length: Any = None, initial_state: Any = None) -> tuple[Any, Any]:
        """``(outputs, final_state)`` as :func:`rnnkit.dynamic_rnn` returns them."""
        return dynamic_rnn(
            self.cell,
            inputs,
            sequence_length=sequence_length,
            initial_state=initial_state,
            time_major=self.time_major,
            backend=self.backend,
        )

    def zero_state(self, batch_size: int, dtype: Any = None, device: Any = None) -> Any:
        """The cell's zero state."""
        return self.cell.zero_state(batch_size, dtype, device)

    def _tf_scopes(self, prefix: str) -> Iterator[tuple[nn.Module, str]]:
        yield from self.cell._tf_scopes(prefix)

    def extra_repr(self) -> str:
        return f"time_major={self.time_major}, backend={self.backend!r}"


class BidirectionalRNN(nn.Module):
    """Runs two cells over a sequence with :func:`rnnkit.bidirectional_dynamic_rnn`.

    ``forward(inputs, sequence_length=None, initial_state_fw=None, initial_state_bw=None)``
    returns ``((output_fw, output_bw), (state_fw, state_bw))``; ``output_bw[t]`` is aligned with
    input ``t``. TF names: ``tf_variables(layer, scope="bidirectional_rnn")`` gives
    ``bidirectional_rnn/fw/...`` and ``bidirectional_rnn/bw/...``.
    """

    cell_fw: Any
    cell_bw: Any

    def __init__(
        self, cell_fw: nn.Module, cell_bw: nn.Module, time_major: bool = False, backend: str = "auto"
    ) -> None:
        super().__init__()
        check_is_cell(cell_fw, "cell_fw")
        check_is_cell(cell_bw, "cell_bw")
        self.cell_fw, self.cell_bw = cell_fw, cell_bw
        self.time_major = bool(time_major)
        self.backend = backend

    def forward(
        self, inputs: Any, sequence_length: Any = None, initial_state_fw: Any = None, initial_state_bw: Any = None
    ) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
        return bidirectional_dynamic_rnn(
            self.cell_fw,
            self.cell_bw,
            inputs,
            sequence_length=sequence_length,
            initial_state_fw=initial_state_fw,
            initial_state_bw=initial_state_bw,
            time_major=self.time_major,
            backend=self.backend,
        )

    def _tf_scopes(self, prefix: str) -> Iterator[tuple[nn.Module, str]]:
        for direction, cell in (("fw", self.cell_fw), ("bw", self.cell_bw)):
            yield from cell._tf_scopes(f"{prefix}/{direction}" if prefix else direction)

    def extra_repr(self) -> str:
        return f"time_major={self.time_major}, backend={self.backend!r}"

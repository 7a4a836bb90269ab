"""``tf.contrib.rnn``'s cells, wrappers and runners (TensorFlow 1.15), under TF's names.

Each keeps TF's constructor arguments in TF's order, TF's variable names (so its checkpoints
load with ``load_tf_checkpoint``), its math and its state structure. All are also in the flat
``rnnkit`` namespace (``rk.LSTMBlockCell``), as ``tf.contrib.rnn.X`` maps to ``rk.X``.

* block cells (``block_cells.py``): ``LSTMBlockCell``, ``LSTMBlockFusedCell``, ``GRUBlockCell``,
  ``GRUBlockCellV2``: the fused path runs them as it runs ``LSTMCell``/``GRUCell``;
* layer-norm LSTMs (``layer_norm_cells.py``): ``LayerNormBasicLSTMCell``, ``LayerNormLSTMCell``:
  fused on the CPU, the norms inside the compiled step loop;
* other cells, on the reference loop: ``NASCell``, ``UGRNNCell``, ``IntersectionRNNCell``
  (``rnn_cells.py``), ``IndRNNCell``, ``IndyGRUCell``, ``IndyLSTMCell`` (``ind_rnn_cells.py``);
* wrappers (``wrappers.py``, ``attention_wrapper.py``): ``AttentionCellWrapper``, ``HighwayWrapper``,
  ``InputProjectionWrapper``, ``OutputProjectionWrapper``, ``EmbeddingWrapper``;
* runners (``rnn_runners.py``): ``stack_bidirectional_dynamic_rnn``, ``stack_bidirectional_rnn``
  (and ``StackBidirectionalRNN``, which names their weights as TF does).
"""

from .attention_wrapper import AttentionCellWrapper
from .block_cells import GRUBlockCell, GRUBlockCellV2, LSTMBlockCell, LSTMBlockFusedCell
from .ind_rnn_cells import IndRNNCell, IndyGRUCell, IndyLSTMCell
from .layer_norm_cells import LayerNormBasicLSTMCell, LayerNormLSTMCell
from .rnn_cells import IntersectionRNNCell, NASCell, UGRNNCell
from .rnn_runners import (
    StackBidirectionalRNN,
    load_stack_bidirectional_variables,
    stack_bidirectional_dynamic_rnn,
    stack_bidirectional_rnn,
    stack_bidirectional_variables,
)
from .wrappers import EmbeddingWrapper, HighwayWrapper, InputProjectionWrapper, OutputProjectionWrapper

__all__ = [
    "AttentionCellWrapper",
    "EmbeddingWrapper",
    "GRUBlockCell",
    "GRUBlockCellV2",
    "HighwayWrapper",
    "IndRNNCell",
    "IndyGRUCell",
    "IndyLSTMCell",
    "InputProjectionWrapper",
    "IntersectionRNNCell",
    "LSTMBlockCell",
    "LSTMBlockFusedCell",
    "LayerNormBasicLSTMCell",
    "LayerNormLSTMCell",
    "NASCell",
    "OutputProjectionWrapper",
    "StackBidirectionalRNN",
    "UGRNNCell",
    "load_stack_bidirectional_variables",
    "stack_bidirectional_dynamic_rnn",
    "stack_bidirectional_rnn",
    "stack_bidirectional_variables",
]

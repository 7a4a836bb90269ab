"""rnnkit: TensorFlow 1.x's LSTM/GRU cells and runners on PyTorch, with TF's exact math.

Cells do one step; runners loop over time::

    import torch, rnnkit as rk

    cell = rk.MultiRNNCell([rk.BasicLSTMCell(128), rk.GRUCell(128)])
    state = cell.zero_state(batch_size=32, dtype=torch.float32)
    out, state = rk.dynamic_rnn(cell, x, sequence_length=lengths, initial_state=state)
    out2, state = rk.dynamic_rnn(cell, x2, initial_state=rk.detach_state(state))
"""

from . import contrib, seq2seq
from .activations import resolve_activation
from .cell_base import RNNCell
from .cells import BasicLSTMCell, BasicRNNCell, GRUCell, LSTMCell
from .contrib import *  # noqa: F403  (tf.contrib.rnn.X is rk.X)
from .contrib import __all__ as _contrib_names
from .interop.tf_load import load_tf_checkpoint
from .layers import RNN, BidirectionalRNN
from .raw_rnn import raw_rnn
from .rnn import bidirectional_dynamic_rnn, dynamic_rnn, reverse_sequence, static_bidirectional_rnn, static_rnn
from .state import LSTMStateTuple, detach_state, flatten_state, map_state, pack_state
from .state_saving_rnn import InMemoryStateSaver, static_state_saving_rnn
from .tfvars import LoadResult, load_tf_variables, tf_variables
from .wrappers import DropoutWrapper, MultiRNNCell, ResidualWrapper

__version__ = "0.1.0"

__all__ = [
    *_contrib_names,
    "BasicLSTMCell",
    "BasicRNNCell",
    "BidirectionalRNN",
    "DropoutWrapper",
    "GRUCell",
    "InMemoryStateSaver",
    "LSTMCell",
    "LSTMStateTuple",
    "LoadResult",
    "MultiRNNCell",
    "RNN",
    "RNNCell",
    "ResidualWrapper",
    "bidirectional_dynamic_rnn",
    "contrib",
    "detach_state",
    "dynamic_rnn",
    "flatten_state",
    "load_tf_checkpoint",
    "load_tf_variables",
    "map_state",
    "pack_state",
    "raw_rnn",
    "resolve_activation",
    "reverse_sequence",
    "seq2seq",
    "static_bidirectional_rnn",
    "static_rnn",
    "static_state_saving_rnn",
    "tf_variables",
]

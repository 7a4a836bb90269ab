"""Every case TensorFlow computed (../shared/golden): outputs, final states and the gradients
of the stored loss w.r.t. inputs, every variable and the initial state, through
``load_tf_variables`` and ``tf_variables``; float64 to 1e-10 and float32 to ~1e-4."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import rnnkit as rk

from .golden import GoldenCase, cell_from_spec, golden_cases

CASES = golden_cases()
TOLERANCES = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-4, atol=2e-5)}


def _tensor(array: np.ndarray, dtype: torch.dtype, grad: bool = False) -> torch.Tensor:
    return torch.tensor(array, dtype=dtype, requires_grad=grad)


def _run_case(case: GoldenCase, dtype: torch.dtype, backend: str) -> dict[str, Any]:
    """Run one golden case; returns rnnkit's outputs, final-state leaves and named gradients."""
    spec = case.spec
    scope = spec.get("scope", "case")
    inputs = _tensor(case.arrays["inputs"], dtype, grad=True)
    lengths = case.arrays.get("sequence_length")
    lengths = None if lengths is None else torch.tensor(lengths)
    variables = {k: v.astype(np.float64) for k, v in case.prefixed("var/").items()}
    initial_leaves = [_tensor(a, dtype, grad=True) for a in case.leaves("initial_state")]

    if spec["runner"] == "bidirectional_dynamic_rnn":
        cells = {d: cell_from_spec(spec[f"cell_{d}"]) for d in ("fw", "bw")}
        layer = rk.BidirectionalRNN(cells["fw"], cells["bw"])
        rk.load_tf_variables(layer, variables, scope=f"{scope}/bidirectional_rnn")
        named = rk.tf_variables(layer, scope=f"{scope}/bidirectional_rnn")
        # the same names, one direction at a time
        fw_names = rk.tf_variables(cells["fw"], scope=f"{scope}/bidirectional_rnn/fw")
        assert all(named[name] is param for name, param in fw_names.items())
        init_fw = init_bw = None
        if initial_leaves:
            n_fw = len(rk.flatten_state(cells["fw"].state_size))
            init_fw = rk.pack_state(cells["fw"].state_size, initial_leaves[:n_fw])
            init_bw = rk.pack_state(cells["bw"].state_size, initial_leaves[n_fw:])
        (out_fw, out_bw), (st_fw, st_bw) = rk.bidirectional_dynamic_rnn(
            cells["fw"].to(dtype), cells["bw"].to(dtype), inputs, sequence_length=lengths,
            initial_state_fw=init_fw, initial_state_bw=init_bw, time_major=spec.get("time_major", False),
            backend=backend,
        )
        outputs = {"outputs_fw": out_fw, "outputs_bw": out_bw}
        final_leaves = rk.flatten_state(st_fw) + rk.flatten_state(st_bw)
    else:
        cell = cell_from_spec(spec["cell"])
        rk.load_tf_variables(cell, variables, scope=f"{scope}/rnn")
        cell.to(dtype)
        named = rk.tf_variables(cell, scope=f"{scope}/rnn")
        initial = rk.pack_state(cell.state_size, initial_leaves) if initial_leaves else None
        if spec["runner"] == "static_rnn":
            steps = list(inputs.unbind(1))
            out_list, state = rk.static_rnn(
                cell, steps, initial_state=initial, sequence_length=lengths, backend=backend
            )
            out = torch.stack(out_list, 1)
        else:
            out, state = rk.dynamic_rnn(
                cell, inputs, sequence_length=lengths, initial_state=initial,
                time_major=spec.get("time_major", False), backend=backend,
            )
        outputs = {"outputs": out}
        final_leaves = rk.flatten_state(state)

    loss = sum((out * _tensor(case.arrays[f"loss_weight/{key}"], dtype)).sum() for key, out in outputs.items())
    loss = loss + sum(
        (leaf * _tensor(case.arrays[f"loss_weight/final_state/{i}"], dtype)).sum() for i, leaf in enumerate(final_leaves)
    )
    leaves_needing_grad = [inputs, *named.values(), *initial_leaves]
    grads = torch.autograd.grad(loss, leaves_needing_grad)
    named_grads = {"grad/inputs": grads[0]}
    named_grads.update({f"grad/var/{name}": g for name, g in zip(named, grads[1 : 1 + len(named)])})
    named_grads.update({f"grad/initial_state/{i}": g for i, g in enumerate(grads[1 + len(named) :])})
    return {"outputs": outputs, "final_leaves": final_leaves, "loss": loss, "grads": named_grads, "names": named}


@pytest.mark.parametrize("backend", ["reference", "auto"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden_case(case: GoldenCase, dtype: torch.dtype, backend: str) -> None:
    """``auto`` runs the fused path wherever it applies (every case but the relu LSTM)."""
    result = _run_case(case, dtype, backend)
    tol = TOLERANCES[dtype]

    def check(actual: torch.Tensor, key: str) -> None:
        expected = torch.from_numpy(case.arrays[key]).to(dtype)
        assert actual.dtype == dtype, key
        torch.testing.assert_close(actual.detach(), expected, **tol, msg=lambda m: f"{case.name} {key}: {m}")

    for key, out in result["outputs"].items():
        check(out, key)
    expected_leaves = case.leaves("final_state")
    assert len(result["final_leaves"]) == len(expected_leaves)
    for i, leaf in enumerate(result["final_leaves"]):
        check(leaf, f"final_state/{i}")
    check(result["loss"], "loss")
    # every TF variable of the case is a parameter, and nothing else is
    assert sorted(result["names"]) == sorted(case.prefixed("var/"))
    expected_grads = {k for k in case.arrays if k.startswith("grad/")}
    assert set(result["grads"]) == expected_grads
    for key, grad in result["grads"].items():
        check(grad, key)

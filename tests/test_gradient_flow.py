"""The gradient-flow experiment: ∂L/∂c_t checked against an independent computation, the
per-step cell dropout, and the paper's qualitative finding on a small real run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import regularizers  # noqa: E402
from benchmark import gradient_flow as G  # noqa: E402


def _independent_cell_grads(lstm, x, y, head, z_cells=None, z_states=0.0):
    """Plain LSTM equations with a zero perturbation δ_t added to every c_t: ∂L/∂δ_t = ∂L/∂c_t.

    With ``z_cells``: zoneout in eval mode, c_t = z c_{t-1} + (1-z) ĉ_t, h_t = z_s h_{t-1} +
    (1-z_s) o tanh(ĉ_t) (the paper's eq. 5: h uses ĉ_t); δ_t is added to the carried c_t."""
    w_ih, w_hh, b_ih, b_hh = lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0
    B, T, _ = x.shape
    h = x.new_zeros(B, lstm.hidden_size)
    c = x.new_zeros(B, lstm.hidden_size)
    deltas = []
    for t in range(T):
        gates = x[:, t] @ w_ih.t() + b_ih + h @ w_hh.t() + b_hh
        i, f, g, o = gates.chunk(4, dim=1)
        c_hat = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        delta = torch.zeros_like(c, requires_grad=True)
        deltas.append(delta)
        if z_cells is None:
            c = c_hat + delta
            h = torch.sigmoid(o) * torch.tanh(c)
        else:
            c = z_cells * c + (1 - z_cells) * c_hat + delta
            h = z_states * h + (1 - z_states) * torch.sigmoid(o) * torch.tanh(c_hat)
    loss = torch.nn.functional.cross_entropy(head(h), y)
    grads = torch.autograd.grad(loss, deltas, allow_unused=True)
    return torch.stack([g.norm(dim=-1) if g is not None else d.new_zeros(B) for g, d in zip(grads, deltas)]), loss


def test_cell_gradients_match_an_independent_computation():
    torch.manual_seed(0)
    lstm = regularizers.RegularizedLSTM(3, 6, batch_first=True)
    head = torch.nn.Linear(6, 4)
    x = torch.randn(5, 9, 3)
    y = torch.randint(0, 4, (5,))
    loss, norms = G.cell_gradients(lstm, x, lambda o: torch.nn.functional.cross_entropy(head(o[:, -1]), y))
    expected, expected_loss = _independent_cell_grads(lstm, x, y, head)
    assert norms.shape == (9, 5)
    assert float(loss) == pytest.approx(float(expected_loss.detach()), rel=1e-6)
    torch.testing.assert_close(norms, expected, rtol=1e-5, atol=1e-8)
    assert torch.all(norms > 0)


def test_zoneout_cell_gradients_match_an_independent_computation():
    """Zoneout in eval mode (deterministic): the gradient into the carried c_t, not into ĉ_t."""
    torch.manual_seed(3)
    lstm = regularizers.RegularizedLSTM(2, 5, batch_first=True,
                                        regularizers=[regularizers.build("zoneout", z_cells=0.5, z_states=0.2)])
    lstm.eval()
    head = torch.nn.Linear(5, 3)
    x = torch.randn(4, 7, 2)
    y = torch.randint(0, 3, (4,))
    loss, norms = G.cell_gradients(lstm, x, lambda o: torch.nn.functional.cross_entropy(head(o[:, -1]), y))
    expected, expected_loss = _independent_cell_grads(lstm, x, y, head, z_cells=0.5, z_states=0.2)
    assert float(loss) == pytest.approx(float(expected_loss.detach()), rel=1e-6)
    torch.testing.assert_close(norms, expected, rtol=1e-5, atol=1e-8)
    assert float(norms[-1].abs().sum()) == 0  # the last carried cell feeds nothing


def test_the_lightning_module_probe_matches_an_independent_computation():
    """What the experiment measures: the benchmark's SequenceClassifier and its own loss."""
    from benchmark.models import SequenceClassifier

    torch.manual_seed(4)
    model = SequenceClassifier(3, input_size=1, hidden_size=6)
    x = torch.randn(5, 8, 1)
    y = torch.randint(0, 3, (5,))
    loss, norms = G.model_cell_gradients(model, x, y)
    lstm = model.rnn
    expected, expected_loss = _independent_cell_grads(lstm, x, y, model.classifier)
    assert float(loss) == pytest.approx(float(expected_loss.detach()), rel=1e-6)
    torch.testing.assert_close(norms, expected, rtol=1e-5, atol=1e-8)
    assert lstm.use_fused  # the probe gave the layer its loop back


def test_observe_cells_sees_every_step_of_the_reference_loop():
    from regularizers.reference import observe_cells

    lstm = regularizers.RegularizedLSTM(2, 4)
    lstm.use_fused = False
    x = torch.randn(6, 3, 2)
    seen = []
    with observe_cells(lambda step, cell: seen.append((step, cell))):
        _, (h, c) = lstm(x)
        with pytest.raises(RuntimeError, match="one observer at a time"):
            with observe_cells(lambda step, cell: None):
                pass
    assert [step for step, _ in seen] == list(range(6))
    torch.testing.assert_close(seen[-1][1], c[0])
    lstm(x)
    assert len(seen) == 6  # inactive outside the block


@pytest.mark.parametrize("variant", ["none", "zoneout", "cell_dropout"])
def test_probe_loop_is_the_layers_forward(variant):
    """Same masks (same seed), same output as the layer itself, in training and in eval."""
    lstm = regularizers.RegularizedLSTM(2, 7, batch_first=True, regularizers=[G.make_regularizer(variant)])
    x = torch.randn(3, 11, 2)
    for training in (True, False):
        lstm.train(training)
        torch.manual_seed(5)
        expected, _ = lstm(x)
        torch.manual_seed(5)
        torch.testing.assert_close(G.layer_output(lstm, x), expected.detach(), rtol=1e-5, atol=1e-6)


def test_zoneout_keeps_gradient_where_cell_dropout_cuts_it():
    torch.manual_seed(1)
    x = torch.randn(4, 30, 1)
    y = torch.randint(0, 3, (4,))
    shares = {}
    for variant in ("zoneout", "cell_dropout"):
        torch.manual_seed(2)
        lstm = regularizers.RegularizedLSTM(1, 8, batch_first=True, regularizers=[G.make_regularizer(variant)])
        head = torch.nn.Linear(8, 3)
        lstm.train()
        _, norms = G.cell_gradients(lstm, x, lambda o: torch.nn.functional.cross_entropy(head(o[:, -1]), y))
        raw = norms.mean(dim=1).double()
        shares[variant] = G.early_mass(list(raw / raw.sum()), 0.5)
    assert shares["zoneout"] > shares["cell_dropout"]


def test_cell_dropout_is_a_per_step_zero_mask():
    reg = G.cell_dropout(0.5)
    lstm = regularizers.RegularizedLSTM(2, 50, regularizers=[reg])
    ctx = lstm._context(0, torch.zeros(20, 8, 2))
    mask = reg.masks(ctx)["cell"]
    assert mask.shape == (20, 8, 50) and set(mask.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(mask[0], mask[1])  # a fresh mask at every step, unlike rnndrop
    assert 0.4 < float(mask.mean()) < 0.6
    lstm.eval()
    ctx = lstm._context(0, torch.zeros(20, 8, 2))
    assert float(reg.masks(ctx)["cell"].squeeze()) == 0.5  # expectation in eval


def test_command_writes_plot_table_and_csv(tmp_path, capsys):
    out = tmp_path / "gf"
    code = G.main(["--hidden-size", "12", "--limit-train-batches", "4", "--grad-batches", "2",
                   "--out", str(out)])
    assert code == 0
    png, csv, md = (out / "gradient_flow_digits.png", out / "gradient_flow_digits.csv",
                    out / "gradient_flow_digits.md")
    assert png.read_bytes().startswith(b"\x89PNG")
    rows = csv.read_text().strip().splitlines()
    assert rows[0] == "step,none,zoneout,cell_dropout,none_raw,zoneout_raw,cell_dropout_raw"
    assert len(rows) == 65  # 64 steps
    columns = list(zip(*[map(float, r.split(",")) for r in rows[1:]]))
    for column in columns[1:4]:
        assert sum(column) == pytest.approx(1.0, rel=1e-6)
    zoneout, dropout = columns[2], columns[3]
    assert sum(zoneout[:32]) > sum(dropout[:32])  # the paper's Figure 6, qualitatively
    text = md.read_text()
    assert "regbench gradient-flow" in text and "sha256" in text
    assert G.main(["--hidden-size", "0", "--out", str(out)]) == 2

"""Divergence estimators against Jacobian traces from reverse-mode autodiff."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

from pushforward.ode import PROBE_KINDS, exact_divergence, hutchinson_divergence, make_probes

F64 = torch.float64


def mlp(features: int, hidden: int = 16, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(features, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.Tanh(),
        nn.Linear(hidden, features),
    ).to(F64)  # fmt: skip


class ConvField(nn.Module):
    """A row-wise image field: two convolutions and a pixel-wise nonlinearity."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.first = nn.Conv2d(channels, 8, 3, padding=1)
        self.second = nn.Conv2d(8, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(torch.tanh(self.first(x)))


def reference_trace(f, x: torch.Tensor) -> torch.Tensor:
    """The trace of each row's full Jacobian, by reverse mode."""

    def one_row(row: torch.Tensor) -> torch.Tensor:
        return f(row.unsqueeze(0)).squeeze(0)

    jacobian = vmap(jacrev(one_row))(x)
    dims = math.prod(x.shape[1:])
    return jacobian.reshape(x.shape[0], dims, dims).diagonal(dim1=1, dim2=2).sum(-1)


@pytest.mark.parametrize("chunk_size", [None, 1, 3, 100])
def test_exact_divergence_matches_jacobian_trace_vectors(chunk_size: int | None) -> None:
    net = mlp(5)
    x = torch.randn(7, 5, dtype=F64)
    value, divergence = exact_divergence(net, x, chunk_size=chunk_size)
    assert divergence.shape == (7,)
    assert torch.allclose(value, net(x), atol=1e-14)
    assert torch.allclose(divergence, reference_trace(net, x), atol=1e-10, rtol=0)


@pytest.mark.parametrize("chunk_size", [None, 5])
def test_exact_divergence_matches_jacobian_trace_images(chunk_size: int | None) -> None:
    torch.manual_seed(1)
    net = ConvField(2).to(F64)
    x = torch.randn(3, 2, 4, 3, dtype=F64)
    value, divergence = exact_divergence(net, x, chunk_size=chunk_size)
    assert value.shape == x.shape and divergence.shape == (3,)
    assert torch.allclose(value, net(x), atol=1e-14)
    assert torch.allclose(divergence, reference_trace(net, x), atol=1e-10, rtol=0)


def test_automatic_blocks_when_directions_times_batch_is_large(monkeypatch) -> None:
    from pushforward.ode import divergence as module

    # With room for 8 rows a pass, 6 directions of batch 3 go in 3 looped blocks.
    monkeypatch.setattr(module, "ROWS_PER_PASS", 8)
    net = mlp(6)
    x = torch.randn(3, 6, dtype=F64)
    _, divergence = exact_divergence(net, x)
    assert torch.allclose(divergence, reference_trace(net, x), atol=1e-10, rtol=0)


def test_no_grad_gives_the_same_values_without_a_graph() -> None:
    net = mlp(4)
    x = torch.randn(3, 4, dtype=F64)
    value, divergence = exact_divergence(net, x)
    with torch.no_grad():
        plain_value, plain_divergence = exact_divergence(net, x)
    assert divergence.requires_grad and not plain_divergence.requires_grad
    assert torch.equal(plain_value, value.detach())
    assert torch.allclose(plain_divergence, divergence.detach(), atol=1e-14)


def test_linear_field_divergence_is_the_trace() -> None:
    matrix = torch.randn(4, 4, dtype=F64)
    x = torch.randn(5, 4, dtype=F64)
    _, divergence = exact_divergence(lambda z: z @ matrix.T, x)
    assert torch.allclose(divergence, matrix.trace().expand(5), atol=1e-13)


@pytest.mark.parametrize("kind", PROBE_KINDS)
def test_hutchinson_is_unbiased(kind: str) -> None:
    net = mlp(4)
    x = torch.randn(3, 4, dtype=F64)
    exact = exact_divergence(net, x)[1]
    generator = torch.Generator().manual_seed(2)
    # 60 independent group means of 50 probes each give the standard error.
    groups = torch.stack(
        [hutchinson_divergence(net, x, make_probes(x, 50, kind, generator))[1] for _ in range(60)]
    )
    mean = groups.mean(0)
    standard_error = groups.std(0) / math.sqrt(groups.shape[0])
    assert (standard_error > 0).all()
    assert ((mean - exact).abs() < 3 * standard_error).all()


def test_hutchinson_single_probe_is_the_quadratic_form() -> None:
    matrix = torch.randn(3, 3, dtype=F64)
    x = torch.randn(2, 3, dtype=F64)
    probe = make_probes(x, 1)[0]
    value, estimate = hutchinson_divergence(lambda z: z @ matrix.T, x, probe)
    assert torch.allclose(value, x @ matrix.T)
    expected = torch.einsum("bi,ij,bj->b", probe, matrix, probe)
    assert torch.allclose(estimate, expected, atol=1e-13)


def test_make_probes_shapes_values_and_reproducibility() -> None:
    x = torch.zeros(4, 2, 3, dtype=torch.float32)
    probes = make_probes(x, 5, "rademacher", torch.Generator().manual_seed(3))
    assert probes.shape == (5, 4, 2, 3) and probes.dtype == torch.float32
    assert set(probes.unique().tolist()) == {-1.0, 1.0}
    again = make_probes(x, 5, "rademacher", torch.Generator().manual_seed(3))
    assert torch.equal(probes, again)
    gaussian = make_probes(x.double(), 4000, "gaussian", torch.Generator().manual_seed(4))
    assert gaussian.dtype == F64
    assert abs(gaussian.mean().item()) < 0.01 and abs(gaussian.var().item() - 1) < 0.02


def test_exact_divergence_gradients_match_finite_differences() -> None:
    net = mlp(3, hidden=5)
    names = [name for name, _ in net.named_parameters()]
    x = torch.randn(4, 3, dtype=F64, requires_grad=True)
    weights = [p.detach().clone().requires_grad_() for p in net.parameters()]

    def divergence_sum(x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        def field(z: torch.Tensor) -> torch.Tensor:
            return functional_call(net, dict(zip(names, params, strict=True)), (z,))

        return exact_divergence(field, x)[1].sum()

    assert torch.autograd.gradcheck(divergence_sum, (x, *weights), eps=1e-6, atol=1e-7)


def test_gradients_through_captured_module_parameters() -> None:
    net = mlp(3, hidden=6)
    x = torch.randn(4, 3, dtype=F64)
    exact_divergence(net, x)[1].sum().backward()
    weight = net[0].weight
    analytic = weight.grad[1, 2].item()
    with torch.no_grad():
        weight[1, 2] += 1e-6
        up = exact_divergence(net, x)[1].sum().item()
        weight[1, 2] -= 2e-6
        down = exact_divergence(net, x)[1].sum().item()
        weight[1, 2] += 1e-6
    assert analytic == pytest.approx((up - down) / 2e-6, rel=1e-6, abs=1e-9)
    assert analytic != 0.0


def test_hutchinson_gradients_match_finite_differences() -> None:
    net = mlp(3, hidden=5)
    x = torch.randn(4, 3, dtype=F64, requires_grad=True)
    noise = make_probes(x, 3, "gaussian", torch.Generator().manual_seed(5))
    assert torch.autograd.gradcheck(
        lambda z: hutchinson_divergence(net, z, noise)[1], (x,), eps=1e-6, atol=1e-7
    )


def test_bad_inputs_are_errors() -> None:
    x = torch.randn(2, 3, dtype=F64)
    with pytest.raises(ValueError, match="shape of its input"):
        exact_divergence(lambda z: z[:, :2], x)
    with pytest.raises(ValueError, match=r"\(batch, \*event\)"):
        exact_divergence(lambda z: z, torch.randn(3))
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        exact_divergence(lambda z: z, x, chunk_size=0)
    with pytest.raises(ValueError, match="noise must be shaped"):
        hutchinson_divergence(lambda z: z, x, torch.randn(4, 2, 2))
    with pytest.raises(ValueError, match="did you mean 'gaussian'"):
        make_probes(x, 1, "gauss")
    with pytest.raises(ValueError, match="probes must be a positive integer"):
        make_probes(x, 0)

"""The ``dfm`` model: classifier-free guidance, the two losses, the builder's options."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional

import pushforward

pytestmark = pytest.mark.usefixtures("one_thread")


def _labelled(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """One token in [0, 4) that equals twice the label with probability 0.6."""
    generator = torch.Generator().manual_seed(seed)
    label = torch.randint(2, (n, 1), generator=generator)
    noise = torch.randint(4, (n, 1), generator=generator)
    keep = torch.rand(n, 1, generator=generator) < 0.6
    return torch.where(keep, 2 * label, noise), label.double()


def test_guidance_is_the_geometric_mixture_of_the_two_denoisers():
    torch.manual_seed(0)
    model = pushforward.build("dfm", features=2, vocab=4, context=1, context_dropout=0.2,
                              hidden=[16]).double()  # fmt: skip
    x_t = torch.tensor([[4, 1], [2, 4]])
    t = torch.tensor([0.3, 0.7], dtype=torch.float64)
    c = torch.tensor([[0.5], [-1.0]], dtype=torch.float64)
    conditional = model.denoiser_logits(x_t, t, c)
    unconditional = functional.log_softmax(
        model.network(x_t, t, torch.cat([torch.zeros_like(c), torch.zeros_like(c)], 1)), -1
    )
    guided = model.denoiser_logits(x_t, t, c, guidance=2.5)
    expected = functional.log_softmax(unconditional + 2.5 * (conditional - unconditional), -1)
    torch.testing.assert_close(guided, expected)
    unguided = pushforward.build("dfm", features=2, vocab=4, context=1, hidden=[16]).double()
    with pytest.raises(ValueError, match="context_dropout"):
        unguided.denoiser_logits(x_t, t, c, guidance=2.0)


def test_guidance_sharpens_a_trained_conditional_model():
    x, label = _labelled(6000)
    torch.manual_seed(0)
    model = pushforward.build("dfm", features=1, vocab=4, context=1, context_dropout=0.2,
                              hidden=[64])  # fmt: skip
    pushforward.fit(model, x, label.float(), steps=400, batch_size=256, lr=3e-3, quiet=True)
    one = torch.ones(1, 1)
    with torch.no_grad():
        plain = model.sample(4000, one, steps=4, generator=torch.Generator().manual_seed(1))
        sharp = model.sample(4000, one, guidance=3.0, steps=4,
                             generator=torch.Generator().manual_seed(1))  # fmt: skip
    # The label-1 token is 2: 0.7 of the mass without guidance (0.6 + 0.4 / 4).
    share, sharper = float((plain == 2).float().mean()), float((sharp == 2).float().mean())
    assert share == pytest.approx(0.7, abs=0.05)
    assert sharper > share + 0.1


@pytest.mark.parametrize("loss", ["cross-entropy", "generalized-kl"])
@pytest.mark.parametrize("path", ["masked", "uniform"])
def test_both_losses_train_on_both_paths(loss, path):
    x, label = _labelled(4000, seed=1)
    torch.manual_seed(0)
    model = pushforward.build("dfm", features=1, vocab=4, context=1, loss=loss, path=path,
                              scheduler="cosine", hidden=[32])  # fmt: skip
    with torch.no_grad():
        before = float(model.log_prob(x[:500], label[:500].float(), draws=8).mean())
    pushforward.fit(model, x, label.float(), steps=300, batch_size=256, lr=3e-3, quiet=True)
    with torch.no_grad():
        after = float(model.log_prob(x[:500], label[:500].float(), draws=8).mean())
    assert after > before + 0.1


def test_the_builder_refuses_inconsistent_options():
    with pytest.raises(ValueError, match="exponent"):
        pushforward.build("dfm", features=2, vocab=3, scheduler="cosine", exponent=2.0)
    with pytest.raises(ValueError, match="uniform path needs one vocabulary"):
        pushforward.build("dfm", features=2, vocab=[3, 2], path="uniform")
    with pytest.raises(ValueError, match="transformer"):
        pushforward.build("dfm", features=2, vocab=3, network="transfomer")
    with pytest.raises(ValueError, match="lists 3 sizes"):
        pushforward.build("dfm", features=2, vocab=[3, 3, 3])
    model = pushforward.build("dfm", features=12, vocab=3, width=32, depth=1, heads=2)
    assert type(model.network).__name__ == "TokenTransformer"
    assert model.sample(3, steps=2).shape == (3, 12)


def test_the_exact_likelihood_keeps_each_rows_context_and_solves_repeats_once():
    torch.manual_seed(0)
    model = pushforward.build("dfm", features=3, vocab=3, context=1, hidden=[16]).double()
    x = torch.tensor([[0, 1, 2], [0, 1, 2], [2, 2, 0]])
    c = torch.tensor([[0.0], [3.0], [3.0]], dtype=torch.float64)
    with torch.no_grad():
        together = model.log_prob(x, c, exact=True)
        alone = torch.cat(
            [model.log_prob(x[i : i + 1], c[i : i + 1], exact=True) for i in range(3)]
        )
        torch.testing.assert_close(together, alone)
        assert float((together[0] - together[1]).abs()) > 1e-6  # the context matters
        unconditional = pushforward.build("dfm", features=3, vocab=3, hidden=[16]).double()
        repeated = unconditional.log_prob(x[[0, 0, 2, 0]], exact=True)
        assert float(repeated[0]) == float(repeated[1]) == float(repeated[3])

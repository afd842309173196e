"""The one protocol every pushforward model speaks: ``loss``, ``log_prob``, ``sample``."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from pushforward.boundary import checked_context
from pushforward.distributions.torch_view import ModelDistribution
from pushforward.inference import InferenceOptions, NoOptions, resolve_options
from pushforward.options import closest
from pushforward.transforms.preprocessing import Preprocessing


class Model(nn.Module):
    r"""A generative model: a pushforward of a simple base distribution.

    Every model answers three questions: how likely is a point (``log_prob``,
    natural log, summed over event dimensions, shape ``(batch,)``), draw points
    (``sample``, shape ``(n, *event_shape)``) and what to minimise to learn
    (``loss``, a scalar). Models that cannot answer one of them say so through
    the class flags ``has_log_prob``, ``has_sample`` and ``has_rsample``.

    ``context`` is the conditioning input: a tensor ``(batch, context)`` with the
    same leading size as the data, or one row broadcast to all of it; ``None``
    for unconditional models.

    The public methods take and return values in the data's own units: the
    model's :class:`~pushforward.transforms.preprocessing.Preprocessing` maps
    them into the model's units (a fitted standardisation, or the identity) and
    its log-determinant enters ``log_prob``. Inference options (an ODE solver,
    say) are declared as dataclasses (``sample_options``, ``log_prob_options``),
    checked here and passed on.

    Subclasses set ``event_shape`` and ``context_features`` and implement
    ``_log_prob`` / ``_rsample_and_log_prob`` (and ``_loss`` where it is not the
    negative log-likelihood) on validated inputs in the model's units; the public
    methods here check the inputs at the boundary and raise errors that name the
    problem.
    """

    has_log_prob: ClassVar[bool] = True
    has_sample: ClassVar[bool] = True
    has_rsample: ClassVar[bool] = False
    # False for models made from another model (a distilled one-step generator): the
    # CLI refuses to train them from data before it writes anything.
    trains_from_data: ClassVar[bool] = True
    # True for models whose ``_loss`` takes fixed (source, data) pairs as ``prepared``.
    learns_from_pairs: ClassVar[bool] = False
    # True where ``log_prob`` is an evidence lower bound, not the log-likelihood itself
    # (a discrete flow-matching model): metrics then report ``nll_bound``, never ``nll``.
    log_prob_is_bound: ClassVar[bool] = False
    # What the model's data are: "vectors" (floats, standardised by a Run) or "tokens"
    # (integers in a vocabulary, never standardised).
    data_kind: ClassVar[str] = "vectors"

    # What ``sample`` / ``rsample`` and ``log_prob`` accept, validated here.
    sample_options: ClassVar[type[InferenceOptions]] = NoOptions
    log_prob_options: ClassVar[type[InferenceOptions]] = NoOptions

    event_shape: tuple[int, ...]
    context_features: int
    preprocessing: Preprocessing
    # Filled by ``pushforward.build``: the registered name and the keywords that
    # rebuild this model, so that ``save``/``load`` need no pickle.
    config: dict[str, Any]

    def __init__(self) -> None:
        super().__init__()
        # The identity until fitted (``pushforward.train_run`` fits a standardisation).
        self.preprocessing = Preprocessing()
        # A network summarising the context before the model's conditioners read it
        # (``build(..., embedding="set")``), trained with the model; None: the context as is.
        self.context_embedding: nn.Module | None = None

    # -- the protocol ---------------------------------------------------------

    def loss(self, x: Tensor, context: Tensor | None = None, prepared: Any = None) -> Tensor:
        """The scalar training objective on data in the data's units.

        The model's objective (:meth:`_loss`) on the preprocessed batch; for a
        discrete flow, the mean negative log-likelihood in the model's units (the
        preprocessing's log-determinant is a constant left out). ``prepared`` is
        the batch's work done ahead by :meth:`prepare_batch`, on preprocessed values.
        """
        x = self.check_input(x)
        context = self.check_context(context, x.shape[0])
        z, _ = self.preprocessing.encode(x)
        return self._loss(z, self.encode_context(context), prepared)

    def log_prob(self, x: Tensor, context: Tensor | None = None, **options: Any) -> Tensor:
        """Log-density of ``x: (batch, *event_shape)`` in the data's units; returns ``(batch,)``.

        ``options`` are this model's ``log_prob_options`` (an ODE solver and its
        tolerances, say); an unknown one is an error listing the valid ones.
        """
        self._require("log_prob", self.has_log_prob)
        resolved = resolve_options(self.log_prob_options, options, self._method("log_prob"))
        x = self.check_input(x)
        context = self.check_context(context, x.shape[0])
        z, logabsdet = self.preprocessing.encode(x)
        log_prob = self._log_prob(z, self.encode_context(context), resolved)
        return log_prob if logabsdet is None else log_prob + logabsdet

    def sample(self, n: int, context: Tensor | None = None, **options: Any) -> Tensor:
        """Draws ``n`` samples ``(n, *event_shape)`` without tracking gradients.

        ``options`` are this model's ``sample_options``.
        """
        self._require("sample", self.has_sample)
        resolved = resolve_options(self.sample_options, options, self._method("sample"))
        with torch.no_grad():
            return self._draw(n, context, resolved, None)[0]

    def rsample(self, n: int, context: Tensor | None = None, **options: Any) -> Tensor:
        """Draws ``n`` reparameterised samples: gradients flow to the parameters."""
        self._require("rsample", self.has_rsample)
        resolved = resolve_options(self.sample_options, options, self._method("rsample"))
        return self._draw(n, context, resolved, None)[0]

    def sample_and_log_prob(
        self, n: int, context: Tensor | None = None, **options: Any
    ) -> tuple[Tensor, Tensor]:
        """Draws ``n`` samples and their log-densities in one pass, without gradients.

        ``options`` may name any of ``sample_options`` and ``log_prob_options``;
        a name both declare (an ODE ``solver``) applies to both.
        """
        self._require("sample_and_log_prob", self.has_sample and self.has_log_prob)
        sampling, scoring = self._joint_options(options, "sample_and_log_prob")
        with torch.no_grad():
            samples, log_prob = self._draw(n, context, sampling, scoring)
        assert log_prob is not None
        return samples, log_prob

    def rsample_and_log_prob(
        self, n: int, context: Tensor | None = None, **options: Any
    ) -> tuple[Tensor, Tensor]:
        """Reparameterised samples and their log-densities (for reverse-KL training)."""
        self._require("rsample_and_log_prob", self.has_rsample and self.has_log_prob)
        sampling, scoring = self._joint_options(options, "rsample_and_log_prob")
        samples, log_prob = self._draw(n, context, sampling, scoring)
        assert log_prob is not None
        return samples, log_prob

    def encode_context(self, context: Tensor | None) -> Tensor | None:
        """A checked context as the model's conditioners read it: preprocessed, then embedded."""
        return self.embed_context(self.preprocessing.encode_context(context))

    def embed_context(self, context: Tensor | None) -> Tensor | None:
        """A preprocessed context through the context embedding (as it is without one)."""
        if context is None or self.context_embedding is None:
            return context
        return self.context_embedding(context)

    def set_context_embedding(self, embedding: nn.Module) -> Model:
        """Installs a network that summarises the context before the conditioners read it.

        The model must have been built for a context of ``embedding.out_features``;
        afterwards it takes contexts of ``embedding.in_features`` values (what
        ``context_features`` then says). ``build(name, ..., embedding=NAME)`` calls this.
        """
        if self.context_embedding is not None:
            raise ValueError("this model already has a context embedding")
        wanted = getattr(embedding, "out_features", None)
        if wanted != self.context_features:
            raise ValueError(
                f"the embedding gives {wanted} features but the model was built for a "
                f"context of {self.context_features}"
            )
        self.context_embedding = embedding
        features = getattr(embedding, "in_features", None)
        if not isinstance(features, int):
            raise TypeError("a context embedding states its input size as an int in_features")
        self.context_features = features
        return self

    def loss_preprocessed(
        self, x: Tensor, context: Tensor | None = None, prepared: Any = None
    ) -> Tensor:
        """The training objective on values already in the model's units (the engine's call).

        The context is embedded here, so a context embedding trains with the model.
        """
        return self._loss(x, self.embed_context(context), prepared)

    def preprocess(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Checked data and context in the model's units, and the log-determinant (or ``None``).

        The context is preprocessed but not embedded: that is the engine's view of it,
        which :meth:`loss_preprocessed` and :meth:`initialize_preprocessed` take.
        """
        x = self.check_input(x)
        context = self.check_context(context, x.shape[0])
        z, logabsdet = self.preprocessing.encode(x)
        return z, self.preprocessing.encode_context(context), logabsdet

    def set_preprocessing(self, preprocessing: Preprocessing) -> Model:
        """Installs ``preprocessing`` (fitted to training data) and returns the model.

        Raises:
            ValueError: a context map for an unconditional model, or a source map
                for a model without an empirical source.
        """
        if not isinstance(preprocessing, Preprocessing):
            raise TypeError(f"expected a Preprocessing, got {type(preprocessing).__name__}")
        if preprocessing.context is not None and self.context_features == 0:
            raise ValueError("a context preprocessing was given for an unconditional model")
        wanted = {
            "data": tuple(self.event_shape),
            "source": tuple(self.event_shape),
            "context": (self.context_features,),
        }
        for part, shape in preprocessing.shapes().items():
            if len(shape) > len(wanted[part]) or any(
                size not in (1, full)
                for size, full in zip(shape[::-1], wanted[part][::-1], strict=False)
            ):
                raise ValueError(
                    f"the {part} preprocessing has shape {shape}, "
                    f"which does not fit the model's {part} shape {wanted[part]}"
                )
        base = getattr(self, "base", None)
        if preprocessing.source is not None and getattr(base, "has_density", True):
            raise ValueError(
                "a source standardisation applies to a flow between two data sets (an "
                "empirical source), not to a model whose base has a density"
            )
        self.preprocessing = preprocessing
        return self

    # -- work ahead of the training step ---------------------------------------

    def prepare_batch(self, x: Tensor, context: Tensor | None, seed: int) -> Any:
        """Work on a training batch that reads no parameter, done one step ahead.

        The training engine calls this for the *next* batch (in the model's
        units) in a background thread while the current step trains, and hands
        the result to ``_loss(x, context, prepared)``. A flow-matching model solves
        its minibatch optimal-transport assignment here, so the assignment costs no
        wall time. Randomness must come from ``torch.Generator().manual_seed(seed)``
        (the engine derives ``seed`` from the run's seed, the step and the rank),
        never from the global generator the training step uses, so runs stay
        reproducible and resumable. The default prepares nothing (``None``).
        """
        return None

    # -- data-dependent initialisation ------------------------------------------

    @torch.no_grad()
    def initialize(self, x: Tensor, context: Tensor | None = None) -> Model:
        """Runs the data-dependent initialisation of every layer that has one, once.

        A layer takes part by having ``awaits_data`` (true until it is initialised)
        and ``initialize_on_next_forward()`` (its next ``forward`` sets its
        parameters from the input it sees), as
        :class:`~pushforward.transforms.normalization.ActNorm` does. One
        training-mode ``log_prob`` of ``x`` carries the batch through the layers in
        order, so each initialises from what it sees in a training step. The pass
        changes nothing else: other buffers (batch-norm running statistics) are
        restored, torch's random generators are forked, and every module's
        training mode is put back. Initialised layers (trained or loaded) are left
        as they are, so a second call does nothing, nor does a call on a model
        without such layers. The training engine calls this on the first batch of
        a run that does not resume; nothing else initialises.

        Args:
            x: ``(batch, *event_shape)`` data in the data's units (the model's
                preprocessing maps it, as a training step would see it).
            context: ``(batch, context)``, one row, or ``None``.

        Returns:
            The model itself.

        Example:
            >>> import torch, pushforward
            >>> model = pushforward.build("realnvp", features=2, transforms=2, hidden=[8])
            >>> model = model.initialize(3.0 + 2.0 * torch.randn(500, 2))
            >>> model.initialize(torch.randn(500, 2)) is model  # already initialised: no-op
            True
        """
        z, context, _ = self.preprocess(x, context)
        return self.initialize_preprocessed(z, context)

    @torch.no_grad()
    def initialize_preprocessed(self, x: Tensor, context: Tensor | None = None) -> Model:
        """:meth:`initialize` on checked values already in the model's units (the engine's call)."""
        waiting: list[Any] = [m for m in self.modules() if getattr(m, "awaits_data", False)]
        if not waiting:
            return self
        theirs = {id(b) for m in waiting for b in m.buffers()}
        kept = [(b, b.clone()) for b in self.buffers() if id(b) not in theirs]
        modes = [(m, m.training) for m in self.modules()]
        devices = [x.device] if x.device.type == "cuda" else []
        try:
            for layer in waiting:
                layer.initialize_on_next_forward()
            self.train()
            with torch.random.fork_rng(devices=devices):
                self._log_prob(x, self.embed_context(context), self.log_prob_options())
        finally:
            # A layer the pass did not reach (an ActNorm run backwards) stays as it was.
            for layer in waiting:
                layer.initialize_on_next_forward(False)
            for buffer, value in kept:
                buffer.copy_(value)
            for module, training in modes:
                module.training = training
        return self

    def after_step(self) -> None:
        """Follows each optimizer step of training; nothing by default.

        A model with state that tracks its own weights (the moving target network
        of a consistency loss) updates it here, so ``loss`` changes nothing. The
        training engine calls it after every step, skipped or not; a loop of one's
        own calls it after ``optimizer.step()``.
        """

    # -- what subclasses implement, on values in the model's units ------------

    def _loss(self, x: Tensor, context: Tensor | None, prepared: Any = None) -> Tensor:
        """The training objective on checked, preprocessed values; by default the mean NLL."""
        return -self._log_prob(x, context, self.log_prob_options()).mean()

    def _log_prob(self, x: Tensor, context: Tensor | None, options: Any) -> Tensor:
        raise NotImplementedError

    def _rsample_and_log_prob(
        self, n: int, context: Tensor | None, options: Any, log_prob_options: Any | None
    ) -> tuple[Tensor, Tensor | None]:
        """``n`` samples, and their log-densities when ``log_prob_options`` is not ``None``."""
        raise NotImplementedError

    # -- plumbing -------------------------------------------------------------

    def _draw(
        self, n: int, context: Tensor | None, options: Any, log_prob_options: Any | None
    ) -> tuple[Tensor, Tensor | None]:
        n, context = self._sampling_args(n, context)
        z, log_prob = self._rsample_and_log_prob(
            n, self.encode_context(context), options, log_prob_options
        )
        x, logabsdet = self.preprocessing.decode(z)
        if log_prob is not None and logabsdet is not None:
            log_prob = log_prob - logabsdet
        return x, log_prob

    def _joint_options(
        self, options: dict[str, Any], method: str
    ) -> tuple[InferenceOptions, InferenceOptions]:
        sampling_names = self.sample_options.names()
        scoring_names = self.log_prob_options.names()
        valid = list(dict.fromkeys([*sampling_names, *scoring_names]))
        for name in options:
            if name not in valid:
                listed = ", ".join(valid) if valid else "none"
                raise ValueError(
                    f"unknown option {name!r} for {self._method(method)}{closest(name, valid)}; "
                    f"valid options: {listed}"
                )
        sampling = {k: v for k, v in options.items() if k in sampling_names}
        scoring = {k: v for k, v in options.items() if k in scoring_names}
        return (
            resolve_options(self.sample_options, sampling, self._method(method)),
            resolve_options(self.log_prob_options, scoring, self._method(method)),
        )

    def _method(self, method: str) -> str:
        name = (getattr(self, "config", None) or {}).get("model", type(self).__name__)
        return f"{name}.{method}"

    # -- validation at the boundary -------------------------------------------

    @property
    def features(self) -> int:
        """Number of scalar values in one event."""
        size = 1
        for dim in self.event_shape:
            size *= dim
        return size

    def _reference(self) -> Tensor | None:
        """The first parameter (else floating buffer): the model's dtype and device.

        Where it lives is remembered as (module, slot, name) and read again on each
        call, so ``model.to(...)`` (which may replace the tensor objects) is seen,
        while the per-step check costs a dictionary lookup instead of a walk over
        every module (about 40 us, 1% of a small network's training step).
        """
        slot = self.__dict__.get("_reference_slot")
        if slot is not None:
            owner, kind, name = slot
            found = getattr(owner, kind).get(name)
            if found is not None:
                return found
        for module in self.modules():
            for name, parameter in module._parameters.items():
                if parameter is not None:
                    object.__setattr__(self, "_reference_slot", (module, "_parameters", name))
                    return parameter
        for module in self.modules():
            for name, buffer in module._buffers.items():
                if buffer is not None and buffer.is_floating_point():
                    object.__setattr__(self, "_reference_slot", (module, "_buffers", name))
                    return buffer
        return None

    def check_input(self, x: Tensor, match_dtype: bool = True) -> Tensor:
        """Checks that ``x`` is a finite floating tensor ``(batch, *event_shape)``.

        With ``match_dtype`` (the default) its dtype must be the model's.
        """
        if not isinstance(x, Tensor):
            raise TypeError(f"expected a torch.Tensor of data, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"data must be a floating-point tensor, got dtype {x.dtype}")
        expected = tuple(self.event_shape)
        if x.ndim != len(expected) + 1 or tuple(x.shape[1:]) != expected:
            shape = "(batch, " + ", ".join(str(d) for d in expected) + ")"
            if x.ndim == len(expected) + 1 and len(expected) == 1:
                raise ValueError(
                    f"data has {x.shape[-1]} features, the model was built for {expected[0]}"
                )
            raise ValueError(f"data has shape {tuple(x.shape)}, the model expects {shape}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("data contains NaN or Inf values")
        reference = self._reference()
        if match_dtype and reference is not None and reference.dtype != x.dtype:
            raise TypeError(
                f"data has dtype {x.dtype} but the model's parameters are {reference.dtype}; "
                f"convert one of them (for instance model.to({x.dtype}))"
            )
        return x

    def check_context(
        self, context: Tensor | None, batch: int, match_dtype: bool = True
    ) -> Tensor | None:
        """Checks a context against the model and expands one row to ``batch`` rows."""
        reference = self._reference() if match_dtype else None
        return checked_context(context, self.context_features, batch, reference)

    def _sampling_args(self, n: int, context: Tensor | None) -> tuple[int, Tensor | None]:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"the number of samples must be a non-negative int, got {n!r}")
        return n, self.check_context(context, n)

    def _require(self, what: str, available: bool) -> None:
        if not available:
            raise NotImplementedError(f"{type(self).__name__} does not provide {what}")

    # -- interoperability --------------------------------------------------------

    def distribution(self, context: Tensor | None = None, **options: Any) -> ModelDistribution:
        """This model, given ``context``, as a ``torch.distributions.Distribution``.

        ``context: (*batch, context)`` gives ``batch_shape = batch``; ``options`` go
        to every ``sample``, ``rsample`` and ``log_prob`` call. See
        :class:`~pushforward.distributions.torch_view.ModelDistribution`.
        """
        return ModelDistribution(self, context, **options)

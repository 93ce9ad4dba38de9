"""GaussianMixtureModule: densities against references, gradients, state, compile, online EM, bad input."""

from __future__ import annotations

import contextlib
import io
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import COVARIANCE_TYPES, dense_covariances, make_blobs
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from torchgmm import ConvergenceWarning, DegenerateComponentWarning, GaussianMixture, GaussianMixtureModule

K, D = 3, 4


def fitted(covariance_type: str, seed: int = 0) -> tuple[GaussianMixture, np.ndarray]:
    X, _ = make_blobs(600, D, K, 4.0, seed=seed)
    X = X + 100.0  # far from the origin: the module must centre before its products
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(K, covariance_type=covariance_type, random_state=seed).fit(X)
    return gm, X


# ------------------------------------------------------------------------------------ densities


@pytest.mark.parametrize("learnable", [False, True])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_log_prob_matches_scipy_and_the_estimator(covariance_type, learnable):
    gm, X = fitted(covariance_type)
    module = gm.to_module(learnable=learnable)
    x = torch.as_tensor(X[:50])
    covs = dense_covariances(gm)
    components = np.stack(
        [np.log(gm.weights_[k]) + multivariate_normal(gm.means_[k], covs[k]).logpdf(X[:50]) for k in range(K)], -1
    )
    with torch.no_grad():
        np.testing.assert_allclose(module.component_log_prob(x).numpy(), components, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(module.log_prob(x).numpy(), logsumexp(components, -1), rtol=1e-9)
        np.testing.assert_allclose(module(x).numpy(), gm.score_samples(X[:50]), rtol=1e-9)
        np.testing.assert_allclose(module.posterior(x).numpy(), gm.predict_proba(X[:50]), rtol=1e-7, atol=1e-12)
        np.testing.assert_array_equal(module.predict(x).numpy(), gm.predict(X[:50]))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_to_distribution_agrees_with_the_module(covariance_type):
    gm, X = fitted(covariance_type)
    module = gm.to_module()
    x = torch.as_tensor(X[:40])
    distribution = module.to_distribution()
    assert isinstance(distribution, torch.distributions.MixtureSameFamily)
    assert isinstance(distribution.component_distribution, torch.distributions.MultivariateNormal)
    torch.testing.assert_close(distribution.log_prob(x), module.log_prob(x), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(
        distribution.component_distribution.covariance_matrix, torch.tensor(dense_covariances(gm))
    )


def test_batched_shapes_and_dtype_follow_the_module():
    gm, X = fitted("full")
    module = gm.to_module()
    x = torch.as_tensor(X[:24]).reshape(2, 3, 4, D)
    assert module.log_prob(x).shape == (2, 3, 4)
    assert module.posterior(x).shape == (2, 3, 4, K)
    assert module.predict(x).shape == (2, 3, 4)
    torch.testing.assert_close(module.log_prob(x).reshape(-1), module.log_prob(x.reshape(-1, D)))
    single = module.float()
    out = single.log_prob(x)  # float64 input, float32 module: computed in float32
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), module.double().log_prob(x), rtol=1e-4, atol=1e-4)


def test_from_covariances_equals_to_module():
    gm, X = fitted("full")
    built = GaussianMixtureModule.from_covariances(
        torch.as_tensor(gm.weights_), torch.as_tensor(gm.means_), torch.as_tensor(gm.covariances_)
    )
    torch.testing.assert_close(
        built.log_prob(torch.as_tensor(X[:10])), gm.to_module().log_prob(torch.as_tensor(X[:10]))
    )


# ------------------------------------------------------------------------------------ gradients


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_gradcheck_with_respect_to_input_and_parameters(covariance_type):
    gm, X = fitted(covariance_type)
    module = gm.to_module(learnable=True)
    x = torch.as_tensor(X[:6]).clone().requires_grad_()
    assert torch.autograd.gradcheck(module.log_prob, (x,))
    assert torch.autograd.gradcheck(lambda x: module.posterior(x), (x,))
    names = [name for name, _ in module.named_parameters()]
    assert len(names) == 3
    originals = tuple(p.detach().clone().requires_grad_() for p in module.parameters())

    def log_prob_of(*params):
        state = dict(zip(names, params, strict=True))
        return torch.func.functional_call(module, state, (x.detach(),))

    assert torch.autograd.gradcheck(log_prob_of, originals)


def test_buffers_have_no_gradient_but_input_does():
    gm, X = fitted("full")
    module = gm.to_module()
    assert list(module.parameters()) == []
    assert {name for name, _ in module.named_buffers()} == {"weights", "means", "precisions_cholesky", "n_steps"}
    x = torch.as_tensor(X[:5]).requires_grad_()
    module.log_prob(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_large_optimiser_steps_keep_covariances_positive_definite(covariance_type):
    """Steps far too large for the loss, and random kicks, still leave valid parameters."""
    gm, X = fitted(covariance_type)
    module = gm.to_module(learnable=True)
    optimiser = torch.optim.Adam(module.parameters(), lr=1.0)  # steps of about 1 in every free parameter
    x = torch.as_tensor(X[:100])
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        optimiser.zero_grad()
        loss = -module.log_prob(x).mean()
        loss.backward()
        optimiser.step()
        with torch.no_grad():  # and random kicks of the free parameters, both signs
            for p in module.parameters():
                p.add_(3.0 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
        with torch.no_grad():
            L = module.scale_tril()
            diagonal = torch.diagonal(L, dim1=-2, dim2=-1)
            assert bool((diagonal > 0).all()) and bool(torch.isfinite(L).all())
            # a triangular factor with a positive diagonal: positive definite by construction
            weights = module.weights
            assert bool((weights >= 0).all()) and abs(float(weights.sum()) - 1) < 1e-9
            assert bool(torch.isfinite(module.log_prob(x)).all())


def test_gradient_ascent_raises_the_likelihood():
    gm, X = fitted("full")
    start = GaussianMixtureModule.from_covariances(
        torch.full((K,), 1.0 / K, dtype=torch.float64),
        torch.as_tensor(gm.means_) + 0.5,
        torch.eye(D, dtype=torch.float64).expand(K, D, D) * 2.0,
        learnable=True,
    )
    x = torch.as_tensor(X)
    before = float(start.log_prob(x).mean().detach())
    optimiser = torch.optim.Adam(start.parameters(), lr=0.1)
    for _ in range(1500):
        optimiser.zero_grad()
        (-start.log_prob(x).mean()).backward()
        optimiser.step()
    after = float(start.log_prob(x).mean().detach())
    assert after > before + 1.0
    assert after == pytest.approx(gm.score(X), abs=0.01)  # the maximum EM found


# ------------------------------------------------------------------------------------ state, devices, modes


@pytest.mark.parametrize("learnable", [False, True])
def test_state_dict_round_trip(learnable):
    gm, X = fitted("diag")
    module = gm.to_module(learnable=learnable)
    other_gm, _ = fitted("diag", seed=1)
    other = other_gm.to_module(learnable=learnable)
    x = torch.as_tensor(X[:20])
    assert not torch.allclose(other.log_prob(x), module.log_prob(x))
    other.load_state_dict(module.state_dict())
    torch.testing.assert_close(other.log_prob(x), module.log_prob(x), rtol=1e-12, atol=1e-12)


def test_no_grad_and_inference_mode():
    gm, X = fitted("tied")
    module = gm.to_module(learnable=True)
    x = torch.as_tensor(X[:10])
    expected = module.log_prob(x).detach()
    with torch.no_grad():
        torch.testing.assert_close(module.log_prob(x), expected)
    with torch.inference_mode():
        torch.testing.assert_close(module.log_prob(x), expected)
        assert module.posterior(x).shape == (10, K)


@pytest.mark.parametrize(
    ("covariance_type", "learnable", "backend"), [("full", True, "inductor"), ("diag", False, "aot_eager")]
)
def test_every_method_compiles_with_fullgraph_and_matches_eager(covariance_type, learnable, backend):
    """The README's claim: log_prob, forward, component_log_prob, posterior, predict and sample all work under
    ``torch.compile(fullgraph=True)`` (one graph, no break), and so does the backward through them.

    The default backend (inductor, which generates and compiles C++: tens of seconds on a cold cache) once; the
    second case traces the same methods with ``aot_eager``, which finds the same graph breaks in a second.
    """
    gm, X = fitted(covariance_type)
    module = gm.to_module(learnable=learnable)
    x = torch.as_tensor(X[:32]).requires_grad_(True)

    def every_method(x):
        samples, labels = module.sample(16)
        return (
            module.log_prob(x),
            module(x),
            module.component_log_prob(x),
            module.posterior(x),
            module.predict(x),
            samples,
            labels,
        )

    def gradients(outputs):
        """Gradients of a scalar of the densities and samples, to the input and every learnable parameter."""
        for t in (x, *module.parameters()):
            t.grad = None
        (outputs[0].sum() + outputs[5].square().sum()).backward()
        return [t.grad.clone() for t in (x, *module.parameters())]

    compiled = torch.compile(every_method, fullgraph=True, backend=backend)
    # inductor draws its own random numbers unless told to fall back to eager's
    with torch._inductor.config.patch(fallback_random=True):
        torch.manual_seed(0)
        got = compiled(x)
    torch.manual_seed(0)
    expected = every_method(x)
    names = ("log_prob", "forward", "component_log_prob", "posterior", "predict", "samples", "labels")
    for name, a, b in zip(names, got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)
    got_grads, expected_grads = gradients(got), gradients(expected)
    assert len(expected_grads) == (1 + 3 * learnable)  # the input, and weights, means and factors when learnable
    for a, b in zip(got_grads, expected_grads, strict=True):
        assert bool(torch.isfinite(b).all())
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_sample_matches_the_mixture_and_is_reparametrised():
    gm, _ = fitted("full")
    module = gm.to_module(learnable=True)
    generator = torch.Generator().manual_seed(0)
    x, labels = module.sample(40_000, generator=generator)
    assert x.shape == (40_000, D) and labels.shape == (40_000,)
    np.testing.assert_allclose(np.bincount(labels.numpy(), minlength=K) / 40_000, gm.weights_, atol=0.01)
    for k in range(K):
        rows = x[labels == k].detach().numpy()
        np.testing.assert_allclose(rows.mean(0), gm.means_[k], atol=0.1)
        np.testing.assert_allclose(np.cov(rows.T), gm.covariances_[k], atol=0.15)
    x.sum().backward()
    assert module.parametrizations.precisions_cholesky.original.grad is not None
    assert module.means.grad is not None


# ------------------------------------------------------------------------------------ online EM


def stream(centres: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    labels = torch.randint(len(centres), (n,), generator=generator)
    return centres[labels] + torch.randn(n, centres.shape[1], generator=generator, dtype=centres.dtype)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_online_em_reaches_the_batch_log_likelihood(covariance_type):
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[-6.0, 0.0, 0.0], [0.0, 6.0, 0.0], [6.0, 0.0, 3.0]], dtype=torch.float64)
    X = stream(centres, 20_000, generator)
    batch = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(X)
    online = GaussianMixture(3, covariance_type=covariance_type, random_state=0)
    for _ in range(100):
        online.partial_fit(stream(centres, 256, generator))
    assert online.n_iter_ == 100 and len(online.lower_bounds_) == 100 and not online.converged_
    assert abs(online.score(X) - batch.score(X)) <= 2e-3 * abs(batch.score(X))
    recent = np.mean(online.lower_bounds_[-20:])  # each batch's log-likelihood before its update
    assert abs(recent - batch.score(X)) <= 0.05 * abs(batch.score(X))
    means = online.means_.numpy()  # tensors in, tensors out
    np.testing.assert_allclose(means[np.argsort(means[:, 0])], centres.numpy(), atol=0.15)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_module_partial_fit_equals_estimator_partial_fit(covariance_type):
    generator = torch.Generator().manual_seed(1)
    centres = torch.tensor([[-5.0, 0.0], [5.0, 0.0]], dtype=torch.float64) + 50.0
    first = stream(centres, 500, generator)
    estimator = GaussianMixture(2, covariance_type=covariance_type, random_state=0).partial_fit(first)
    module = estimator.to_module()
    module.n_steps.fill_(1)  # the estimator has made one update
    for _ in range(5):
        x = stream(centres, 300, generator)
        estimator.partial_fit(x)
        ll = module.partial_fit(x)
        assert float(ll) == pytest.approx(estimator.lower_bounds_[-1], rel=1e-10)
    assert int(module.n_steps) == estimator.n_iter_ == 6
    np.testing.assert_allclose(module.weights.numpy(), estimator.weights_, rtol=1e-9)
    np.testing.assert_allclose(module.means.numpy(), estimator.means_, rtol=1e-9)
    np.testing.assert_allclose(
        module.precisions_cholesky.numpy(), estimator.precisions_cholesky_, rtol=1e-8, atol=1e-12
    )


def test_first_step_of_weight_one_is_an_em_step():
    """With learning_offset=1 and decay 1 the first update is plain EM on that batch."""
    X, _ = make_blobs(400, 3, 2, 5.0, seed=3)
    start = GaussianMixture(2, random_state=0, max_iter=1, tol=0)
    with pytest.warns(ConvergenceWarning):
        start.fit(X)
    init = dict(weights_init=start.weights_, means_init=start.means_, precisions_init=start.precisions_)
    online = GaussianMixture(2, learning_decay=1.0, learning_offset=1.0, **init).partial_fit(X)
    one_more = GaussianMixture(2, max_iter=1, tol=0, **init)
    with pytest.warns(ConvergenceWarning):
        one_more.fit(X)
    np.testing.assert_allclose(online.means_, one_more.means_, rtol=1e-10)
    np.testing.assert_allclose(online.covariances_, one_more.covariances_, rtol=1e-10)


def test_learnable_module_partial_fit_keeps_its_parametrisation():
    gm, X = fitted("full")
    module = gm.to_module(learnable=True)
    names = {name for name, _ in module.named_parameters()}
    module.partial_fit(torch.as_tensor(X[:200]))
    assert {name for name, _ in module.named_parameters()} == names
    assert int(module.n_steps) == 1 and torch.isfinite(module.log_prob(torch.as_tensor(X[:5]))).all()


# ------------------------------------------------------------------------------------ bad input


@pytest.fixture
def module():
    return fitted("full")[0].to_module()


def test_wrong_feature_size_names_the_shapes(module):
    with pytest.raises(ValueError, match=r"Expected input of shape \(\.\.\., 4\) .* got shape \(5, 3\)"):
        module.log_prob(torch.zeros(5, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"got shape \(\)"):
        module.log_prob(torch.tensor(1.0))


@pytest.mark.parametrize("x", [torch.zeros(2, D, dtype=torch.int64), torch.zeros(2, D, dtype=torch.bool)])
def test_non_floating_input(module, x):
    with pytest.raises(TypeError, match=r"Expected a real floating-point tensor, got dtype torch\.(int64|bool)"):
        module.posterior(x)


def test_non_tensor_input(module):
    with pytest.raises(TypeError, match=r"Expected a torch\.Tensor of shape \(\.\.\., 4\), got ndarray"):
        module.log_prob(np.zeros((2, D)))


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nan_in_a_batch_names_its_index(module, bad):
    x = torch.zeros(3, D, dtype=torch.float64)
    x[2, 1] = bad
    with pytest.raises(ValueError, match=r"shape \(3, 4\) contains NaN or infinity \(first at index \(2, 1\)\)"):
        module.log_prob(x)
    with pytest.raises(ValueError, match=r"contains NaN"):
        module.partial_fit(x)
    module.check_finite = False
    assert torch.isnan(module.log_prob(x)[2])


@pytest.mark.parametrize(
    "change, error, match",
    [
        ({"weights": torch.ones(2) / 2}, ValueError, r"weights must have shape \(3,\)"),
        ({"weights": torch.tensor([0.5, 0.5, 0.5])}, ValueError, r"weights must be positive and sum to 1"),
        ({"weights": torch.tensor([1.0, 0.0, 0.0])}, ValueError, r"weights must be positive"),
        ({"means": torch.zeros(3)}, ValueError, r"means must have shape \(n_components, n_features\)"),
        ({"precisions_cholesky": torch.ones(3, 4)}, ValueError, r"must have shape \(3, 4, 4\) for full"),
        ({"precisions_cholesky": -torch.eye(4).expand(3, 4, 4)}, ValueError, r"positive diagonal"),
        ({"precisions_cholesky": torch.ones(4, 4).expand(3, 4, 4)}, ValueError, r"must be upper triangular"),
        ({"means": torch.full((3, 4), math.nan)}, ValueError, r"must be finite"),
        ({"means": torch.zeros(3, 4, dtype=torch.long)}, TypeError, r"means must be a floating-point tensor"),
        ({"covariance_type": "banana"}, ValueError, r"Invalid value for 'covariance_type'"),
        ({"learning_decay": 0.5}, ValueError, r"'learning_decay' must be in \(0\.5, 1\]"),
        ({"learning_offset": 0.5}, ValueError, r"'learning_offset' must be >= 1\.0"),
        ({"reg_covar": -1.0}, ValueError, r"'reg_covar' must be >= 0"),
    ],
)
def test_bad_constructor_arguments(change, error, match):
    args = {
        "weights": torch.ones(3) / 3,
        "means": torch.zeros(3, 4),
        "precisions_cholesky": torch.eye(4).expand(3, 4, 4),
        "covariance_type": "full",
    }
    args.update(change)
    with pytest.raises(error, match=match):
        GaussianMixtureModule(**args)


def test_from_covariances_rejects_indefinite():
    with pytest.raises(ValueError, match=r"full covariances must be symmetric positive definite"):
        GaussianMixtureModule.from_covariances(torch.ones(2) / 2, torch.zeros(2, 2), -torch.eye(2).expand(2, 2, 2))


def test_module_partial_fit_errors(module):
    with pytest.raises(ValueError, match=r"partial_fit expects a batch of shape \(n, 4\), got \(2, 3, 4\)"):
        module.partial_fit(torch.zeros(2, 3, D, dtype=torch.float64))
    collapsed = GaussianMixtureModule(
        torch.ones(1, dtype=torch.float64),
        torch.zeros(1, 2, dtype=torch.float64),
        torch.ones(1, 2, dtype=torch.float64),
        "diag",
        reg_covar=0.0,
        learning_decay=1.0,
        learning_offset=1.0,
    )
    before = {k: v.clone() for k, v in collapsed.state_dict().items()}
    with pytest.raises(ValueError, match=r"could not be repaired; the module is unchanged\. Scale the input data"):
        collapsed.partial_fit(1e300 * torch.randn(10, 2, dtype=torch.float64))  # variances overflow
    for name, value in collapsed.state_dict().items():
        torch.testing.assert_close(value, before[name])


def test_estimator_partial_fit_errors():
    X, _ = make_blobs(300, 3, 2, 5.0, seed=0)
    with pytest.raises(ValueError, match=r"'learning_decay' must be in \(0\.5, 1\]"):
        GaussianMixture(2, learning_decay=0.3).partial_fit(X)
    with pytest.raises(TypeError, match=r"'learning_offset' must be of type float"):
        GaussianMixture(2, learning_offset="2").partial_fit(X)
    with pytest.raises(ValueError, match=r"Expected n_samples >= n_components in the first partial_fit batch"):
        GaussianMixture(5).partial_fit(X[:3])
    gm = GaussianMixture(2, random_state=0).partial_fit(X)
    with pytest.raises(ValueError, match=r"X has 2 features, but GaussianMixture is expecting 3"):
        gm.partial_fit(X[:, :2])
    with pytest.raises(ValueError, match=r"Input X contains NaN|contains NaN"):
        gm.partial_fit(np.where(np.arange(3) == 1, np.nan, X))
    assert gm.n_iter_ == 1
    with pytest.raises(ValueError, match=r"every restart produced non-finite statistics"):
        GaussianMixture(2, random_state=0).partial_fit(1e200 * X)  # squares overflow
    with pytest.raises(ValueError, match=r"could not be repaired; the model is unchanged"):
        gm.partial_fit(1e200 * X)
    assert gm.n_iter_ == 1


def test_partial_fit_repairs_collapsed_components():
    """Two distinct points, two components, reg_covar=0: each component collapses and is regularised."""
    X = np.repeat([[0.0, 0.0], [1.0, 1.0]], 10, 0)
    gm = GaussianMixture(2, reg_covar=0.0, random_state=0)
    with pytest.warns(
        DegenerateComponentWarning, match=r"repaired in this update \(\d+ repairs?, the first: component \d regularised"
    ):
        gm.partial_fit(X)
    assert gm.repairs_ and all(r.action == "regularised" and r.reg_covar > 0 for r in gm.repairs_)
    assert np.isfinite(gm.covariances_).all() and np.isfinite(gm.precisions_cholesky_).all()
    np.testing.assert_allclose(np.sort(gm.means_[:, 0]), [0.0, 1.0], atol=1e-6)
    # the module, with a first step of weight 1 (the batch alone)
    module = GaussianMixtureModule.from_covariances(
        torch.full((2,), 0.5, dtype=torch.float64),
        torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64),
        torch.full((2, 2), 0.01, dtype=torch.float64),
        "diag",
        reg_covar=0.0,
        learning_decay=1.0,
        learning_offset=1.0,
    )
    with pytest.warns(
        DegenerateComponentWarning, match=r"repaired in this step \(\d+ repairs?, the first: component \d regularised"
    ):
        module.partial_fit(torch.as_tensor(X))
    assert torch.isfinite(module.precisions_cholesky).all() and int(module.n_steps) == 1


def test_to_module_needs_a_fitted_estimator():
    from torchgmm import NotFittedError

    with pytest.raises(NotFittedError):
        GaussianMixture(2).to_module()


# ------------------------------------------------------------------------------------ docs


def test_docs_out_of_distribution_example_runs():
    text = (Path(__file__).resolve().parent.parent / "docs" / "deep-learning.md").read_text()
    start = text.index("An out-of-distribution detector")
    code = re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(code, "docs/deep-learning.md", "exec"), {})
    flagged = float(re.search(r"flagged as out of distribution: ([\d.]+)%", output.getvalue()).group(1))
    assert flagged > 90.0

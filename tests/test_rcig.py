"""RCIG: linearisation, kernel-ridge head, inner problem, implicit gradient, and the outer loss going down."""

from dataclasses import replace

import pytest
import torch

from ddlnl.augment import DSA
from ddlnl.errors import ConfigError
from ddlnl.methods import METHODS, method_config, rcig
from ddlnl.train import TrainConfig

# The smallest settings that run the whole loop (pool, inner, Hessian inverse, pool training) in
# about a second; fixed inner/Hessian learning rates skip the start-up search.
TINY = {"iterations": 3, "batch_real": 16, "width": 8, "pool_size": 2, "inner_steps": 3,
        "hinv_steps": 3, "inner_lr": 1e-3, "hinv_lr": 1e-3}

CLASSES, SIDE = 3, 6


def _lin(seed: int = 0) -> rcig.LinearizedNet:
    cfg = replace(rcig.RCIGConfig(), width=4, depth=2)
    net = rcig._new_net(cfg, channels=1, num_classes=CLASSES, image_size=(SIDE, SIDE), seed=seed,
                        device=torch.device("cpu"), dtype=torch.float64)
    return rcig.LinearizedNet(net)


def _problem(seed: int = 0, n: int = 4, n_real: int = 10):
    """float64 support images, perturbed centred one-hot labels and a real batch."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, SIDE, SIDE, generator=g, dtype=torch.float64)
    y = torch.nn.functional.one_hot(torch.arange(n) % CLASSES, CLASSES).double() - 1.0 / CLASSES
    y = y + 0.1 * torch.randn(y.shape, generator=g, dtype=torch.float64)
    xt = torch.randn(n_real, 1, SIDE, SIDE, generator=g, dtype=torch.float64)
    yt = torch.nn.functional.one_hot(torch.randint(CLASSES, (n_real,), generator=g), CLASSES).double()
    return x, y, xt, yt


def _random_tangent(lin: rcig.LinearizedNet, seed: int, scale: float = 1.0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: scale * torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in lin.base.items()}


def test_linearised_network_agrees_with_the_network_to_first_order():
    lin = _lin()
    x = _problem()[0]
    d = _random_tangent(lin, 1)
    torch.testing.assert_close(lin(x, lin.zero_tangent()), lin.network(x))
    first_order = float((lin(x, d) - lin.network(x)).norm())  # ||J d||
    errors = []
    for eps in (4e-3, 2e-3, 1e-3):
        exact = lin.network(x, {k: lin.base[k] + eps * d[k] for k in d})
        errors.append(float((exact - lin(x, {k: eps * v for k, v in d.items()})).norm()))
    assert errors[0] < 0.05 * 4e-3 * first_order
    for bigger, smaller in zip(errors, errors[1:]):
        assert 3.5 < bigger / smaller < 4.5  # halving eps quarters the gap: O(eps^2)


def test_kernel_ridge_head_matches_linalg_solve_and_a_ridge_final_layer():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(7, 5, generator=g, dtype=torch.float64)  # N > D: F F^T alone is singular
    targets = torch.randn(7, 3, generator=g, dtype=torch.float64)
    query = torch.randn(4, 5, generator=g, dtype=torch.float64)
    l2 = 0.1
    alpha = rcig.krr_fit(feats, targets, l2)
    torch.testing.assert_close(alpha, torch.linalg.solve(feats @ feats.T + l2 * torch.eye(7, dtype=torch.float64),
                                                         targets))
    weight = torch.linalg.solve(feats.T @ feats + l2 * torch.eye(5, dtype=torch.float64), feats.T @ targets)
    torch.testing.assert_close(rcig.krr_predict(feats, targets, query, l2), query @ weight)


def test_inner_loss_is_the_reference_ridge_objective():
    lin = _lin()
    x, y, _, _ = _problem()
    delta = _random_tangent(lin, 2, scale=0.1)
    l2 = 0.05
    feats, _, dlogits = lin.tangent(x, delta)
    gram = feats @ feats.T
    alpha = torch.linalg.solve(gram + l2 * torch.eye(4, dtype=torch.float64), y - dlogits)
    preds = dlogits + gram @ alpha
    sq_delta = sum((v ** 2).sum() for v in delta.values())
    # algorithms.get_krr_loss_gd (self_loss): squared error + ridge on W* and on Delta, / (N K)
    reference = (0.5 * ((y - preds) ** 2).sum() + 0.5 * l2 * ((alpha * (gram @ alpha)).sum() + sq_delta)) / y.numel()
    torch.testing.assert_close(rcig.inner_loss(lin, x, y, delta, l2), reference)


@pytest.mark.parametrize("jacobian_mb", [0.0, 100.0])
def test_inner_gradient_and_hessian_products_match_autograd(jacobian_mb):
    lin = _lin()
    x, y, _, _ = _problem()
    delta, v = _random_tangent(lin, 3, 0.1), _random_tangent(lin, 4)
    support = rcig._Support(lin, x, y, 0.05, jacobian_mb)
    assert (support.jacobian is None) == (jacobian_mb == 0.0)
    value, grad = support.value_and_grad(delta)
    leaves = {k: t.clone().requires_grad_(True) for k, t in delta.items()}
    loss = rcig.inner_loss(lin, x, y, leaves, 0.05)
    auto = torch.autograd.grad(loss, list(leaves.values()), create_graph=True)
    hv_auto = torch.autograd.grad(sum((a * v[k]).sum() for a, k in zip(auto, leaves)), list(leaves.values()))
    assert value == pytest.approx(float(loss.detach()), rel=1e-10)
    hv = support.hvp(v)
    for k, a, h in zip(leaves, auto, hv_auto):
        torch.testing.assert_close(grad[k], a.detach())
        torch.testing.assert_close(hv[k], h)


def _exact_inner_solution(lin: rcig.LinearizedNet, x: torch.Tensor, y: torch.Tensor, l2: float) -> dict:
    """argmin of the inner quadratic from an explicit Jacobian (independent of the solvers)."""
    jac = torch.func.jacrev(lambda p: lin.network(x, p))(lin.base)
    rows = y.numel()
    big_j = torch.cat([jac[k].reshape(rows, -1) for k in lin.base], 1)
    feats = lin.tangent(x, lin.zero_tangent())[0]
    ridge = torch.linalg.inv(feats @ feats.T + l2 * torch.eye(x.shape[0], dtype=x.dtype))
    weight = torch.kron(ridge.contiguous(), torch.eye(y.shape[1], dtype=x.dtype))  # rows are (n, k)
    hessian = big_j.T @ weight @ big_j + torch.eye(big_j.shape[1], dtype=x.dtype)
    flat = torch.linalg.solve(hessian, big_j.T @ weight @ y.reshape(-1))
    sizes = [v.numel() for v in lin.base.values()]
    return {k: part.view_as(lin.base[k]) for k, part in zip(lin.base, flat.split(sizes))}


def test_implicit_gradient_matches_finite_differences():
    lin = _lin()
    x, y, xt, yt = _problem()
    log_temp, l2 = torch.tensor(0.3, dtype=torch.float64), 0.05
    n_params = sum(v.numel() for v in lin.base.values())
    step = rcig.outer_step(lin, x, y, log_temp, xt, yt, l2=l2, inner_steps=n_params + 20, inner_lr=0.0,
                           hinv_steps=n_params + 20, hinv_lr=0.0, solver="cg", margin=False,
                           clip_implicit=False)
    exact = _exact_inner_solution(lin, x, y, l2)
    for k in exact:
        torch.testing.assert_close(step.delta[k], exact[k], rtol=1e-8, atol=1e-10)

    def loss(images: torch.Tensor, labels: torch.Tensor) -> float:
        delta = _exact_inner_solution(lin, images, labels, l2)
        return float(rcig.outer_loss(lin, images, labels, log_temp, delta, xt, yt, l2, margin=False)[0])

    g = torch.Generator().manual_seed(5)
    dx = torch.randn(x.shape, generator=g, dtype=torch.float64)
    dy = torch.randn(y.shape, generator=g, dtype=torch.float64)
    eps = 1e-5
    fd_x = (loss(x + eps * dx, y) - loss(x - eps * dx, y)) / (2 * eps)
    fd_y = (loss(x, y + eps * dy) - loss(x, y - eps * dy)) / (2 * eps)
    assert float((step.grad_images * dx).sum()) == pytest.approx(fd_x, rel=1e-5)
    assert float((step.grad_labels * dy).sum()) == pytest.approx(fd_y, rel=1e-5)
    # The implicit part matters: the direct gradient alone is far off.
    assert abs(float((step.direct_images * dx).sum()) - fd_x) > 0.1 * abs(fd_x)


def test_adam_solvers_approach_the_exact_solutions():
    lin = _lin()
    x, y, _, _ = _problem()
    support = rcig._Support(lin, x, y, 0.05)
    exact_delta, _ = rcig.solve_inner(support, 300, 0.0, solver="cg")
    best = support.value_and_grad(exact_delta)[0]
    start = support.value_and_grad(lin.zero_tangent())[0]
    _, values = rcig.solve_inner(support, 200, 0.02, solver="adam")
    assert values[-1] - best < 0.01 * (start - best)
    rhs = _random_tangent(lin, 6)
    exact_v, residuals_cg = rcig.solve_hinv(support, rhs, 300, 0.0, solver="cg")
    _, residuals = rcig.solve_hinv(support, rhs, 200, 10.0, solver="adam")
    optimum = -float(sum((exact_v[k] * rhs[k]).sum() for k in rhs))  # min of v^T(Hv - 2b) = -b^T H^-1 b
    assert residuals[-1] - optimum < 0.05 * abs(optimum)


def test_outer_loss_decreases_over_a_short_run(tiny_dataset):
    train = tiny_dataset.train
    # Temperature frozen, so the decrease comes from the images and labels.
    over = {**TINY, "batch_real": 64, "depth": 2, "pool_size": 4, "inner_steps": 10, "hinv_steps": 10,
            "inner_lr": 3e-3, "hinv_lr": 0.3, "lr_temp": 0.0, "lr_img": 0.01, "use_flip": False}
    before = METHODS["rcig"].distill(train, 2, method_config("rcig", overrides={**over, "iterations": 0}),
                                     seed=0, num_classes=4)
    cfg = method_config("rcig", overrides={**over, "iterations": 30})
    after = METHODS["rcig"].distill(train, 2, cfg, seed=0, num_classes=4)
    assert len(after.meta["loss"]) == 30
    seeds = [100, 101, 102]  # held-out networks, not in the pool
    assert rcig.objective(after, train, cfg, seeds=seeds) < 0.8 * rcig.objective(before, train, cfg, seeds=seeds)


def test_tiny_run_returns_probabilities_and_keeps_raw_labels(tiny_dataset):
    cfg = method_config("rcig", overrides=TINY)
    syn = METHODS["rcig"].distill(tiny_dataset.train, 2, cfg, seed=0, num_classes=4)
    assert syn.images.shape == (8, 1, 8, 8) and torch.isfinite(syn.images).all()
    assert syn.labels.dtype == torch.float32 and syn.labels.shape == (8, 4)
    torch.testing.assert_close(syn.labels.sum(1), torch.ones(8))
    raw = torch.tensor(syn.meta["raw_labels"])
    assert torch.equal(raw.argmax(1), syn.hard_labels)
    torch.testing.assert_close(syn.labels, torch.softmax(syn.meta["label_scale"] * raw, 1))
    assert syn.hard_labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    again = METHODS["rcig"].distill(tiny_dataset.train, 2, cfg, seed=0, num_classes=4)
    assert torch.equal(syn.images, again.images) and torch.equal(syn.labels, again.labels)
    hard = METHODS["rcig"].distill(tiny_dataset.train, 2, replace(cfg, label_output="hard", iterations=1),
                                   seed=0, num_classes=4)
    assert hard.labels.dtype == torch.int64


def test_learning_rate_search_runs_and_is_positive(tiny_dataset):
    over = {**TINY, "inner_lr": None, "hinv_lr": None, "iterations": 1}
    syn = METHODS["rcig"].distill(tiny_dataset.train, 1, method_config("rcig", overrides=over), seed=0,
                                  num_classes=4)
    assert syn.meta["inner_lr"][0] > rcig.INNER_LR_START and syn.meta["hinv_lr"][0] > rcig.HINV_LR_START


def test_presets_and_config_checks(tiny_dataset):
    cpu = method_config("rcig", "cpu")
    assert isinstance(cpu, rcig.RCIGConfig) and not cpu.use_flip
    assert method_config("rcig").pool_size == 30 and method_config("rcig").l2_rate == 0.0005
    with pytest.raises(ConfigError, match="solver"):
        rcig.distill(tiny_dataset.train, 1, replace(cpu, solver="lbfgs"), seed=0, num_classes=4)


def test_rcig_evaluation_recipe():
    fmnist = rcig.rcig_eval_recipe(100, "fashion-mnist")
    assert (fmnist.steps, fmnist.batch_size, fmnist.flip_copies, fmnist.loss) == (2000, None, False, "mse")
    cfg = rcig.rcig_eval_config(TrainConfig(), num_images=100, dataset_name="fashion-mnist")
    assert (cfg.epochs, cfg.batch_size, cfg.norm, cfg.activation, cfg.weight_decay) == (2000, 100, "none", "relu", 0.0)
    cifar = rcig.rcig_eval_config(TrainConfig(), num_images=10, dataset_name="cifar10")
    assert (cifar.epochs, cifar.batch_size) == (1000, 20)  # 10 images + their flips, 1000 steps
    big = rcig.rcig_eval_config(TrainConfig(), num_images=1000, dataset_name="cifar10")
    assert (big.batch_size, big.epochs) == (256, 250)  # 2000 images, 8 batches an epoch, 2000 steps
    for c in (cfg, cifar):
        DSA(c.dsa_strategy)  # valid tokens


def test_jacobian_budget_follows_the_free_memory(monkeypatch):
    lin = _lin()
    x, y, _, _ = _problem()
    monkeypatch.setattr(rcig.losses, "free_memory_bytes", lambda device: 4 * 2 ** 30)
    assert rcig.jacobian_budget_mb(None, "cpu") == pytest.approx(rcig.JACOBIAN_FREE_FRACTION * 4096)
    assert rcig.jacobian_budget_mb(7.0, "cpu") == 7.0 and rcig.jacobian_budget_mb(0.0, "cpu") == 0.0
    assert rcig._Support(lin, x, y, 0.05, None).jacobian is not None
    assert rcig._Support(lin, x, y, 0.05, 0.0).jacobian is None  # 0 still forces JVP/VJP
    monkeypatch.setattr(rcig.losses, "free_memory_bytes", lambda device: 1024)  # nearly nothing free
    assert rcig._Support(lin, x, y, 0.05, None).jacobian is None
    monkeypatch.setattr(rcig.losses, "free_memory_bytes", lambda device: None)
    assert rcig.jacobian_budget_mb(None, "cpu") == 512.0


def test_free_memory_is_read_from_the_host():
    free = rcig.free_memory_bytes("cpu")
    assert free is None or 0 < free <= 2 ** 50


@pytest.mark.parametrize("solver", ["adam", "cg"])
def test_outer_step_is_the_same_with_and_without_the_materialised_jacobian(solver):
    lin = _lin()
    x, y, xt, yt = _problem()
    log_temp = torch.tensor(0.3, dtype=torch.float64)
    kw = dict(l2=0.05, inner_steps=8, inner_lr=1e-3, hinv_steps=8, hinv_lr=1e-3, solver=solver)
    slow = rcig.outer_step(lin, x, y, log_temp, xt, yt, jacobian_mb=0.0, **kw)
    fast = rcig.outer_step(lin, x, y, log_temp, xt, yt, jacobian_mb=1e6, **kw)
    for a, b in [(slow.grad_images, fast.grad_images), (slow.grad_labels, fast.grad_labels),
                 (slow.grad_log_temp, fast.grad_log_temp)]:
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert slow.inner_losses == pytest.approx(fast.inner_losses, rel=1e-9)


def test_adabelief_step_equals_optax_scale_by_belief():
    # optax.adabelief = scale_by_belief(b1=0.9, b2=0.999, eps=1e-16, eps_root=1e-16) then -lr:
    # the prediction error is taken against the first moment BEFORE this step's update
    # (optax: prediction_error = g - state.mu), and eps_root is added to the stored nu.
    import math

    lr, b1, b2, eps = 0.003, 0.9, 0.999, 1e-16
    grads = [[0.5, -1.0, 2.0], [0.4, -0.2, 1.0], [-0.3, 0.1, 3.0], [0.2, 0.2, -1.0], [1.0, -2.0, 0.5]]
    p0 = [0.1, -0.2, 0.3]
    expected, mu, nu = list(p0), [0.0] * 3, [0.0] * 3
    for t, g in enumerate(grads, start=1):
        for i in range(3):
            error = g[i] - mu[i]
            mu[i] = b1 * mu[i] + (1 - b1) * g[i]
            nu[i] = b2 * nu[i] + (1 - b2) * error * error + eps
            mu_hat, nu_hat = mu[i] / (1 - b1 ** t), nu[i] / (1 - b2 ** t)
            expected[i] -= lr * mu_hat / (math.sqrt(nu_hat) + eps)
    p = torch.tensor(p0, dtype=torch.float64)
    opt = rcig._AdaBelief([p], [lr])
    for g in grads:
        opt.step([torch.tensor(g, dtype=torch.float64)])
    assert torch.allclose(p, torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=1e-12)


def test_own_recipe_trains_on_the_set_and_its_flips_for_the_planned_steps():
    # RCIG eval.py appends the flips before training; CIFAR-10 IPC 50 (500 images) then takes
    # 2000 Adam steps of batch 256 over 1000 images, 500 of them warm-up.
    import math

    from ddlnl.synthetic import SyntheticSet

    g = torch.Generator().manual_seed(0)
    images = torch.randn(500, 3, 4, 4, generator=g)
    raw = torch.randn(500, 10, generator=g)
    syn = SyntheticSet(images, torch.softmax(raw, 1), meta={"method": "rcig", "num_classes": 10,
                                                             "raw_labels": raw.tolist()})
    cfg, data = rcig.own_recipe(TrainConfig(), syn, "cifar10")
    assert data.images.shape[0] == 1000
    assert torch.equal(data.images[500:], images.flip(-1)) and torch.equal(data.labels[500:], raw)
    steps_per_epoch = math.ceil(data.images.shape[0] / cfg.batch_size)
    assert cfg.batch_size == 256 and 2000 <= cfg.epochs * steps_per_epoch < 2000 + steps_per_epoch
    assert 500 <= cfg.warmup_epochs * steps_per_epoch < 500 + steps_per_epoch
    # Grayscale sets have no flip copies (depth_3_no_flip.txt).
    _, gray = rcig.own_recipe(TrainConfig(), syn, "fashion-mnist")
    assert gray.images.shape[0] == 500


def test_rcig_convnets_double_their_width_per_block():
    # RCIG models.Conv: features = width * 2**i, for the distillation and the evaluation nets.
    net = rcig._new_net(rcig.RCIGConfig(), channels=3, num_classes=10, image_size=(32, 32), seed=0,
                        device=torch.device("cpu"))
    widths = [m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert widths == [128, 256, 512] and net.feature_dim == 512 * 4 * 4
    cfg = rcig.rcig_eval_config(TrainConfig(), num_images=100, dataset_name="cifar10")
    assert (cfg.width, cfg.width_multiplier) == (128, 2)
    assert method_config("rcig", "cpu").width_multiplier == 1  # the CPU preset keeps it constant


def test_rcig_zca_distils_in_rcig_whitened_space(tiny_dataset):
    from ddlnl.augment import zca_space_for

    syn = rcig.distill(tiny_dataset.train, 1, replace(rcig.RCIGConfig(), **{**TINY, "iterations": 0, "zca": True,
                                                                            "ema_decay": 0.0}),
                       seed=0, num_classes=4)
    assert syn.meta["image_space"] == "zca" and syn.meta["zca"]["convention"] == "rcig"
    space = zca_space_for(syn.meta, tiny_dataset.train.images)
    assert space.pixel_box is None  # RCIG whitens the standardised images themselves
    init = space.transform(tiny_dataset.train.images)[torch.tensor(syn.meta["init_indices"])]
    assert torch.allclose(syn.images, init, atol=1e-5)


def test_softplus_beta_zero_is_plain_relu_as_rcigs_softplus_temp_zero(tiny_dataset):
    # RCIG models.Conv(use_softplus=(softplus_temp != 0)): temp 0 is ReLU, which the study uses on Tiny-ImageNet.
    x = torch.randn(5, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    nets = {b: rcig._new_net(replace(rcig.RCIGConfig(), width=4, depth=2, softplus_beta=b), channels=1,
                             num_classes=CLASSES, image_size=(SIDE, SIDE), seed=3, device=torch.device("cpu"),
                             dtype=torch.float64) for b in (0.0, 60.0)}
    relu, soft = nets[0.0], nets[60.0]
    assert not any(isinstance(m, torch.nn.Softplus) for m in relu.modules())
    # same weights through ReLU by hand: conv -> max(0, .) -> avg pool, twice, then the linear head
    convs = [m for m in relu.modules() if isinstance(m, torch.nn.Conv2d)]
    head = [m for m in relu.modules() if isinstance(m, torch.nn.Linear)][-1]
    h = x
    for conv in convs:
        h = torch.nn.functional.avg_pool2d(torch.clamp(conv(h), min=0), 2)
    assert torch.allclose(relu(x), head(h.flatten(1)), atol=1e-12)
    soft.load_state_dict(relu.state_dict())
    assert not torch.allclose(soft(x), relu(x), atol=1e-6)  # softplus(60 x)/60 is close to, not equal to, ReLU
    with pytest.raises(ConfigError, match="softplus_beta"):
        replace(rcig.RCIGConfig(), softplus_beta=-1.0).check()
    syn = rcig.distill(tiny_dataset.train, 1, replace(rcig.RCIGConfig(), **TINY, softplus_beta=0.0), seed=0,
                       num_classes=4)  # the whole loop (linearisation, solves, implicit gradient) runs on ReLU
    assert torch.isfinite(syn.images).all() and torch.isfinite(syn.labels).all()

"""network.py and weightInit.py against the SPEC's layer table and the DCGAN initialisation."""

import numpy as np
import paddle
import paddle.nn as nn
import pytest

from network import BN_MOMENTUM, Discriminator, Generator, bce_loss, parameter_count
from weightInit import init_weights


@pytest.fixture(scope="module")
def nets():
    paddle.seed(0)
    return Generator(), Discriminator()


def spec_param_counts(nz=100, ngf=64, ndf=64, nc=3):
    """Trainable parameters from the SPEC's table: 4x4 kernels without bias, BN scale + shift."""
    g_convs = [(nz, ngf * 8), (ngf * 8, ngf * 4), (ngf * 4, ngf * 2), (ngf * 2, ngf), (ngf, nc)]
    g_bn = [ngf * 8, ngf * 4, ngf * 2, ngf]
    d_convs = [(nc, ndf), (ndf, ndf * 2), (ndf * 2, ndf * 4), (ndf * 4, ndf * 8), (ndf * 8, 1)]
    d_bn = [ndf * 2, ndf * 4, ndf * 8]
    g = sum(a * b * 16 for a, b in g_convs) + sum(2 * c for c in g_bn)
    d = sum(a * b * 16 for a, b in d_convs) + sum(2 * c for c in d_bn)
    return g, d


def test_shapes_and_ranges_at_default_widths(nets):
    G, D = nets
    z = paddle.randn([5, 100, 1, 1])
    x = G(z)
    assert x.shape == [5, 3, 64, 64]
    assert float(x.min()) >= -1 and float(x.max()) <= 1
    p = D(x)
    assert p.shape == [5]
    assert float(p.min()) > 0 and float(p.max()) < 1


def test_parameter_counts_match_spec_table(nets):
    G, D = nets
    assert (parameter_count(G), parameter_count(D)) == spec_param_counts() == (3576704, 2765568)
    assert (parameter_count(Generator(nz=10, ngf=8)), parameter_count(Discriminator(ndf=8))) == spec_param_counts(
        10, 8, 8
    )


def test_layer_sequence_matches_spec(nets):
    G, D = nets
    g_layers = [type(l).__name__ for l in G.main]
    assert g_layers == ["Conv2DTranspose", "BatchNorm2D", "ReLU"] * 4 + ["Conv2DTranspose", "Tanh"]
    d_layers = [type(l).__name__ for l in D.main]
    assert d_layers == (["Conv2D", "LeakyReLU"] + ["Conv2D", "BatchNorm2D", "LeakyReLU"] * 3 + ["Conv2D", "Sigmoid"])
    convs = [l for l in G.main if isinstance(l, nn.Conv2DTranspose)] + [l for l in D.main if isinstance(l, nn.Conv2D)]
    for i, c in enumerate(convs):
        last_or_first = i in (0, 9)  # G's first and D's last layer: k4 s1 p0
        assert list(c._kernel_size) == [4, 4] and c.bias is None
        assert list(c._stride) == ([1, 1] if last_or_first else [2, 2])
        assert c._padding in (0, [0, 0]) if last_or_first else c._padding in (1, [1, 1])


def test_intermediate_shapes_follow_the_shape_comments():
    G, D = Generator(ngf=8), Discriminator(ndf=8)
    x = paddle.randn([2, 100, 1, 1])
    shapes = []
    for layer in G.main:
        x = layer(x)
        if isinstance(layer, nn.Conv2DTranspose):
            shapes.append(x.shape[1:])
    assert shapes == [[64, 4, 4], [32, 8, 8], [16, 16, 16], [8, 32, 32], [3, 64, 64]]
    shapes = []
    for layer in D.main:
        x = layer(x)
        if isinstance(layer, nn.Conv2D):
            shapes.append(x.shape[1:])
    assert shapes == [[8, 32, 32], [16, 16, 16], [32, 8, 8], [64, 4, 4], [1, 1, 1]]


def test_batchnorm_momentum_and_leaky_slope(nets):
    G, D = nets
    bns = [l for m in (G, D) for l in m.sublayers() if isinstance(l, nn.BatchNorm2D)]
    assert len(bns) == 7 and all(bn._momentum == BN_MOMENTUM == 0.5 for bn in bns)
    leaky = [l for l in D.sublayers() if isinstance(l, nn.LeakyReLU)]
    assert len(leaky) == 4 and all(l._negative_slope == 0.2 for l in leaky)


def test_batchnorm_running_stats_move_halfway():
    """Paddle's momentum 0.5: running = 0.5 * running + 0.5 * batch (the tutorial's setting)."""
    D = Discriminator(ndf=8)
    bn = D.main[3]
    x = paddle.randn([16, 3, 64, 64]) * 3 + 2
    h = D.main[1](D.main[0](x))
    h = D.main[2](h)
    batch_mean = h.mean(axis=[0, 2, 3])
    bn(h)
    np.testing.assert_allclose(bn._mean.numpy(), 0.5 * batch_mean.numpy(), rtol=1e-4, atol=1e-6)


def _check_init(G, D):
    convs = [
        l.weight.numpy().ravel()
        for m in (G, D)
        for l in m.sublayers()
        if isinstance(l, (nn.Conv2D, nn.Conv2DTranspose))
    ]
    w = np.concatenate(convs)
    se = 0.02 / np.sqrt(w.size)
    assert abs(w.mean()) < 5 * se
    assert abs(w.std() - 0.02) < 0.02 * 5 / np.sqrt(2 * w.size)
    for c in convs:  # each layer too, with its own sampling error
        assert abs(c.std() - 0.02) < 0.02 * 6 / np.sqrt(2 * c.size)
    bns = [l for m in (G, D) for l in m.sublayers() if isinstance(l, nn.BatchNorm2D)]
    scale = np.concatenate([b.weight.numpy() for b in bns])
    assert abs(scale.mean() - 1) < 5 * 0.02 / np.sqrt(scale.size)
    assert abs(scale.std() - 0.02) < 0.02 * 6 / np.sqrt(2 * scale.size)
    assert all(np.all(b.bias.numpy() == 0) for b in bns)


def test_initial_weights_have_dcgan_statistics(nets):
    _check_init(*nets)


def test_init_weights_redraws_in_place():
    G, D = Generator(ngf=16), Discriminator(ndf=16)
    for m in (G, D):
        for p in m.parameters():
            p.set_value(paddle.full_like(p, 7.0))
    paddle.seed(3)
    init_weights(G), init_weights(D)
    _check_init(G, D)
    before = G.main[0].weight.numpy().copy()
    paddle.seed(3)
    init_weights(G)
    np.testing.assert_array_equal(G.main[0].weight.numpy(), before)  # seeded: reproducible


def test_seed_makes_construction_reproducible():
    paddle.seed(5)
    a = Generator(ngf=8).main[0].weight.numpy()
    paddle.seed(5)
    b = Generator(ngf=8).main[0].weight.numpy()
    paddle.seed(6)
    c = Generator(ngf=8).main[0].weight.numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_bce_loss_matches_formula():
    p = paddle.to_tensor([0.9, 0.2, 0.5])
    np.testing.assert_allclose(float(bce_loss(p, 1.0)), -np.log([0.9, 0.2, 0.5]).mean(), rtol=1e-6)
    np.testing.assert_allclose(float(bce_loss(p, 0.0)), -np.log([0.1, 0.8, 0.5]).mean(), rtol=1e-6)
    assert bce_loss(p.astype("float16"), 1.0).dtype == paddle.float32

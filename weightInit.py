"""DCGAN weight initialisation (Radford et al. 2015): every convolution and transposed convolution
weight from N(0, 0.02), BatchNorm scale from N(1, 0.02) and shift 0; convolutions have no bias
(BatchNorm follows them, or, at D's input and G's output, the DCGAN paper has none either).

network.py builds its layers with these attributes; `init_weights` re-draws them in place.
"""

from __future__ import annotations

import paddle
import paddle.nn as nn

conv_initializer = nn.initializer.Normal(mean=0.0, std=0.02)
bn_weight_initializer = nn.initializer.Normal(mean=1.0, std=0.02)
bn_bias_initializer = nn.initializer.Constant(0.0)


def conv_weight_attr() -> paddle.ParamAttr:
    return paddle.ParamAttr(initializer=conv_initializer)


def bn_weight_attr() -> paddle.ParamAttr:
    return paddle.ParamAttr(initializer=bn_weight_initializer)


def bn_bias_attr() -> paddle.ParamAttr:
    return paddle.ParamAttr(initializer=bn_bias_initializer)


@paddle.no_grad()
def init_weights(model: nn.Layer) -> nn.Layer:
    """Re-initialise every conv and BatchNorm layer of `model` in place (like `model.apply(weights_init)`
    in pytorch/examples dcgan). Draws from Paddle's global generator: seed it with `paddle.seed`."""
    for layer in model.sublayers(include_self=True):
        if isinstance(layer, (nn.Conv2D, nn.Conv2DTranspose)):
            conv_initializer(layer.weight)
            if layer.bias is not None:
                bn_bias_initializer(layer.bias)
        elif isinstance(layer, (nn.BatchNorm2D, nn.SyncBatchNorm)):
            bn_weight_initializer(layer.weight)
            bn_bias_initializer(layer.bias)
    return model

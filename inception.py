"""pytorch-fid's FID Inception-v3 (src/pytorch_fid/inception.py, fid_inception_v3) in Paddle: torchvision's
Inception-v3 whose Mixed_5b-5d, 6b-6e and 7b average-pool their pool branch without counting the padding and whose
Mixed_7c max-pools it. Sub-layer names are torchvision's, so parameter names map 1:1 to the .pth keys. fid.py
builds it (and imports this module only then, so that `import fid` loads no paddle) and loads its weights.
"""

from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

RESIZE = 299  # the network's input size: every image is resized (bilinear) to 299 x 299


class BasicConv2d(nn.Layer):
    def __init__(self, cin: int, cout: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2D(cin, cout, kernel_size, stride, padding, bias_attr=False)
        self.bn = nn.BatchNorm2D(cout, epsilon=1e-3)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def avg_pool(x):  # TensorFlow's average pool: the zero padding is not counted (exclusive)
    return F.avg_pool2d(x, 3, stride=1, padding=1, exclusive=True)


class FIDInceptionA(nn.Layer):  # Mixed_5b/5c/5d: in x 35 x 35 -> (224 + pool_features) x 35 x 35
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)  # 64
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)  # 64
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)  # 96
        self.branch_pool = BasicConv2d(cin, pool_features, 1)  # pool_features

    def forward(self, x):
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return paddle.concat([b1, b5, b3, self.branch_pool(avg_pool(x))], axis=1)


class InceptionB(nn.Layer):  # Mixed_6a: 288 x 35 x 35 -> 768 x 17 x 17
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)  # 384
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)  # 96

    def forward(self, x):
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return paddle.concat([b3, bd, F.max_pool2d(x, 3, stride=2)], axis=1)  # + 288


class FIDInceptionC(nn.Layer):  # Mixed_6b-6e: 768 x 17 x 17 -> 768 x 17 x 17
    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, 1)  # 192
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))  # 192
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))  # 192
        self.branch_pool = BasicConv2d(cin, 192, 1)  # 192

    def forward(self, x):
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        bd = self.branch7x7dbl_5(self.branch7x7dbl_4(self.branch7x7dbl_3(self.branch7x7dbl_2(bd))))
        return paddle.concat([b1, b7, bd, self.branch_pool(avg_pool(x))], axis=1)


class InceptionD(nn.Layer):  # Mixed_7a: 768 x 17 x 17 -> 1280 x 8 x 8
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)  # 320
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)  # 192

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return paddle.concat([b3, b7, F.max_pool2d(x, 3, stride=2)], axis=1)  # + 768


class FIDInceptionE(nn.Layer):  # Mixed_7b (avg pool), 7c (max pool): in x 8 x 8 -> 2048 x 8 x 8
    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)  # 320
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))  # 384
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))  # 384
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))  # 384
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))  # 384
        self.branch_pool = BasicConv2d(cin, 192, 1)  # 192

    def forward(self, x):
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = paddle.concat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], axis=1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = paddle.concat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], axis=1)
        # FIDInceptionE_2 max-pools here (the TF graph's quirk); padded cells never win a max of >= 1 real cell
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else avg_pool(x)
        return paddle.concat([b1, b3, bd, self.branch_pool(pooled)], axis=1)


class FIDInceptionV3(nn.Layer):
    """pytorch-fid's FID Inception, pool3 features only. Sub-layer names are torchvision's, so parameter
    names map 1:1 to the .pth keys (bn._mean / bn._variance = running_mean / running_var)."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)  # 32 x 149 x 149
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)  # 32 x 147 x 147
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)  # 64 x 147 x 147, max pool -> 64 x 73 x 73
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)  # 80 x 73 x 73
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)  # 192 x 71 x 71, max pool -> 192 x 35 x 35
        self.Mixed_5b = FIDInceptionA(192, 32)  # 256 x 35 x 35
        self.Mixed_5c = FIDInceptionA(256, 64)  # 288 x 35 x 35
        self.Mixed_5d = FIDInceptionA(288, 64)  # 288 x 35 x 35
        self.Mixed_6a = InceptionB(288)  # 768 x 17 x 17
        self.Mixed_6b = FIDInceptionC(768, 128)  # 768 x 17 x 17
        self.Mixed_6c = FIDInceptionC(768, 160)  # 768 x 17 x 17
        self.Mixed_6d = FIDInceptionC(768, 160)  # 768 x 17 x 17
        self.Mixed_6e = FIDInceptionC(768, 192)  # 768 x 17 x 17
        self.Mixed_7a = InceptionD(768)  # 1280 x 8 x 8
        self.Mixed_7b = FIDInceptionE(1280, max_pool=False)  # 2048 x 8 x 8
        self.Mixed_7c = FIDInceptionE(2048, max_pool=True)  # 2048 x 8 x 8
        self.sha256 = ""  # of the weight file loaded (load_inception); "" for random weights

    def forward(self, x):
        """x: float32 [B, 3, H, W] in [0, 1] -> [B, 2048]."""
        x = F.interpolate(x, size=(RESIZE, RESIZE), mode="bilinear", align_corners=False, align_mode=0)
        x = 2 * x - 1  # 3 x 299 x 299 in [-1, 1]
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
        for block in (
            self.Mixed_5b,
            self.Mixed_5c,
            self.Mixed_5d,
            self.Mixed_6a,
            self.Mixed_6b,
            self.Mixed_6c,
            self.Mixed_6d,
            self.Mixed_6e,
            self.Mixed_7a,
            self.Mixed_7b,
            self.Mixed_7c,
        ):
            x = block(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)  # 2048

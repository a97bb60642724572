"""ResNet-18 [He et al., 2016, "Deep Residual Learning for Image Recognition"] in plain torch,
for 1x28x28 MNIST digits: the built-in app `resnet18`, a model of real size (~11.2M parameters,
~45 MB of float32 per update, with BatchNorm's running statistics and int64 counters) for
scale tests.

The four stages of two basic blocks (64, 128, 256, 512 channels) are the paper's. The stem is
fitted to small images, as the paper's CIFAR experiments and most MNIST ports do: a 3x3 stride-1
conv then a 2x2 max-pool (28 -> 14), instead of the ImageNet 7x7 stride-2 conv and 3x3 pool,
which would leave 1x1 maps in the last stage, too small for BatchNorm on a batch of one.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 conv + BatchNorm layers with an identity shortcut, or a 1x1 conv + BatchNorm one
    when the block changes the stride or the width."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


class ResNet18(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        widths = (64, 128, 256, 512)
        stages, inplanes = [], 64
        for i, planes in enumerate(widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(inplanes, planes, stride), BasicBlock(planes, planes)))
            inplanes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.bn1(self.conv1(x))))  # 64 x 14 x 14
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # 512 x 2 x 2
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18() -> nn.Module:
    """ResNet-18 for 1x28x28 images and 10 classes."""
    return ResNet18(in_channels=1, num_classes=10)

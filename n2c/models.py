"""Reference networks: the small digits CNN of the demo.

Any user network works with n2c; these exist so the built-in default runs in
seconds and the tests have a real trained model.
"""

from __future__ import annotations

from torch import nn

from n2c.qcfs import QCFS


class DigitsCNN(nn.Module):
    """conv3x3(16) → act → avgpool2 → conv3x3(32) → act → avgpool2 → fc(64) → act → fc(10).

    ``act`` is QCFS with ``levels`` levels and initial threshold ``lam`` (trained
    for conversion) or ReLU (``levels=None``; conversion then needs calibration data).
    """

    def __init__(self, levels: int | None = 8, in_channels: int = 1, image_size: int = 8,
                 num_classes: int = 10, lam: float = 2.0):
        super().__init__()

        def act():
            return QCFS(levels, lam) if levels else nn.ReLU()

        side = image_size // 4
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1), act(), nn.AvgPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), act(), nn.AvgPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * side * side, 64), act(), nn.Linear(64, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))

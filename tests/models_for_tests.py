"""Small architectures that tests load through --arch."""

from torch import nn


class SigmoidNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.act = nn.Sigmoid()
        self.fc = nn.Linear(72, 10)

    def forward(self, x):
        return self.fc(self.act(self.conv(x)).flatten(1))

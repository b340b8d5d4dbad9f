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


class MaxPoolNet(nn.Sequential):
    """A digits CNN with a MaxPool after its activations (8x8 input)."""

    def __init__(self):
        super().__init__(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10))

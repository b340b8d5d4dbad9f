"""Convert your own ReLU CNN from Python: calibrate, convert to one timestep, export
NIR, then run it with Loihi integer arithmetic.

    .venv/bin/python examples/convert_your_model.py
"""

import torch
from torch import nn

from n2c.data import load_dataset
from n2c.cli.pipeline import export_model, load_network, run_backend
from n2c.ann.train import accuracy, predict, train


class MyCNN(nn.Module):
    """A user's network: functional ReLUs, torch.flatten, BatchNorm; n2c handles all of them."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.pool = nn.AvgPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        x = nn.functional.relu(self.conv2(x))
        return self.fc(torch.flatten(x, 1))


def main():
    torch.manual_seed(0)
    train_set, test_set = load_dataset("digits", "train"), load_dataset("digits", "test")
    model = train(MyCNN(), train_set, epochs=30)
    print(f"ReLU ANN accuracy: {accuracy(predict(model, test_set.x), test_set.y):.4f}")

    # thresholds from the 99.9th percentile of each activation, 16 levels, one timestep
    snn = export_model(model, "out/my_cnn.nir", (1, 8, 8), test_set.input_scale, timesteps=1,
                       levels=16, calib=train_set, calib_mode="percentile")
    print(f"float SNN (T=1) accuracy: {accuracy(predict(snn, test_set.x), test_set.y):.4f}")

    _, net = load_network("out/my_cnn.nir")
    run = run_backend(net, test_set.x, "reference")
    print(f"integer SNN accuracy (reference simulator): {(run.predictions == test_set.y).mean():.4f}")


if __name__ == "__main__":
    main()

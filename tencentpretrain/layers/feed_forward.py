import torch.nn as nn

from tencentpretrain.layers.activations import ACTIVATIONS


class PositionwiseFeedForward(nn.Module):
    def __init__(self, hidden_size, feedforward_size, hidden_act):
        super().__init__()
        self.linear_1 = nn.Linear(hidden_size, feedforward_size)
        self.linear_2 = nn.Linear(feedforward_size, hidden_size)
        self.act = ACTIVATIONS[hidden_act]

    def forward(self, x):
        return self.linear_2(self.act(self.linear_1(x)))

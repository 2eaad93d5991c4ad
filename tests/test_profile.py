import torch

from edgefa.models.registry import create_model
from edgefa.profile import count_macs, count_params


def test_macs_of_a_conv_and_linear_by_hand():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.nn.Flatten(),
                              torch.nn.Linear(8 * 10 * 10, 5))
    # conv: 10*10 outputs x 8 channels x (3*3*3) MACs; linear: 800 x 5
    assert count_macs(net, 10) == 10 * 10 * 8 * 27 + 800 * 5
    assert count_params(net) == 8 * 27 + 800 * 5 + 5


def test_peer_architecture_size():
    model = create_model("mobilenet_v1_3ddfa")
    assert count_params(model) == 850_398  # 3DDFA-V2 mb05: "0.85M params"
    assert 45e6 < count_macs(model) < 50e6  # ~49.5M quoted, conv/linear only counted here

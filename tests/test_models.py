import pytest
import torch

from ddlnl.errors import ConfigError
from ddlnl.models import ConvNet, create_model


@pytest.mark.parametrize("size,channels", [(8, 1), (28, 1), (32, 3), (64, 3)])
@pytest.mark.parametrize("norm", ["instance", "batch", "none"])
def test_convnet_is_sized_from_the_data(size, channels, norm):
    net = create_model("convnet", channels=channels, num_classes=7, image_size=(size, size), width=16, norm=norm)
    x = torch.randn(3, channels, size, size)
    assert net(x).shape == (3, 7)
    assert net.embed(x).shape == (3, net.feature_dim)


def test_convnet_defaults_follow_the_distillation_standard():
    net = ConvNet(3, 10, (32, 32))
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in net.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(convs) == 3 and all(c.out_channels == 128 for c in convs)
    # "instancenorm" of the reference code: GroupNorm with one group per channel.
    assert len(norms) == 3 and all(n.num_groups == n.num_channels == 128 for n in norms)
    assert net.feature_dim == 128 * 4 * 4


def test_unknown_model_or_option_is_refused_by_name():
    with pytest.raises(ConfigError, match="unknown model"):
        create_model("resnet999", channels=1, num_classes=2, image_size=(8, 8))
    with pytest.raises(ConfigError, match="norm"):
        create_model("convnet", channels=1, num_classes=2, image_size=(8, 8), norm="layerz")
    with pytest.raises(ConfigError, match="bogus"):
        create_model("convnet", channels=1, num_classes=2, image_size=(8, 8), bogus=1)

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


def test_28x28_single_channel_input_is_padded_to_the_reference_4x4_map():
    # DatasetCondensation/DATM/DANCE ConvNet: padding 3 on the first conv for 1-channel 28x28
    # (28 -> 32), so depth 3 at width 128 ends at 4x4: 2048 features, as on CIFAR.
    net = ConvNet(1, 10, (28, 28))
    first = net.features[0]
    assert first.padding == (3, 3)
    assert net.feature_dim == 2048
    assert net.features(torch.randn(2, 1, 28, 28)).shape == (2, 128, 4, 4)
    # The padding is what the references use there only: RGB 28x28 and the 8x8 digits keep padding 1.
    assert ConvNet(3, 10, (28, 28)).feature_dim == 128 * 3 * 3
    digits = ConvNet(1, 10, (8, 8), depth=2)
    assert digits.features[0].padding == (1, 1) and digits.feature_dim == 128 * 2 * 2


def test_depth_4_on_64x64_ends_at_4x4():
    # Tiny-ImageNet: the study's ConvNetD4 (64 -> 32 -> 16 -> 8 -> 4).
    from ddlnl.models import fit_depth

    assert fit_depth(4, (64, 64)) == 4
    net = ConvNet(3, 200, (64, 64), depth=4, width=8)
    assert net.features(torch.randn(1, 3, 64, 64)).shape == (1, 8, 4, 4)


def test_width_multiplier_doubles_the_width_per_block():
    # RCIG models.Conv: features=width * 2**i (128, 256, 512 at depth 3).
    net = ConvNet(3, 10, (32, 32), width=16, width_multiplier=2, norm="none")
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 32, 64]
    assert net.feature_dim == 64 * 4 * 4
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert [c.out_channels for c in ConvNet(3, 10, (32, 32), width=16).modules()
            if isinstance(c, torch.nn.Conv2d)] == [16, 16, 16]

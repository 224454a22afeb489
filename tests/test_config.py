from dataclasses import dataclass

import pytest

from ddlnl.config import apply_overrides
from ddlnl.errors import ConfigError
from ddlnl.train import TrainConfig


def test_overrides_parse_to_the_field_types():
    cfg = apply_overrides(TrainConfig(), ["epochs=12", "lr=0.5", "use_learned_lr=false", "norm=batch"])
    assert cfg.epochs == 12 and cfg.lr == 0.5 and cfg.use_learned_lr is False and cfg.norm == "batch"


def test_unknown_key_names_the_key_and_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown key 'epoch'.*epochs"):
        apply_overrides(TrainConfig(), ["epoch=3"])


@pytest.mark.parametrize("item,needle", [("epochs=ten", "epochs"), ("lr=fast", "lr"),
                                         ("use_learned_lr=maybe", "use_learned_lr"), ("epochs", "key=value"),
                                         ("epochs=2.5", "epochs")])
def test_bad_values_name_the_key(item, needle):
    with pytest.raises(ConfigError, match=needle):
        apply_overrides(TrainConfig(), [item])


def test_check_runs_after_overrides():
    with pytest.raises(ConfigError, match="schedule"):
        apply_overrides(TrainConfig(), {"schedule": "sometimes"})


def test_tuple_and_optional_fields():
    @dataclass(frozen=True)
    class C:
        ipcs: tuple[int, ...] = (1,)
        root: str | None = None

    c = apply_overrides(C(), ["ipcs=1,10,50", "root=/data"])
    assert c.ipcs == (1, 10, 50) and c.root == "/data"
    assert apply_overrides(c, ["root=none"]).root is None

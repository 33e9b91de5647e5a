"""The rule tables: the names they accept agree with what mmengine accepts."""


def test_priority_names_are_mmengines():
    from mmengine.runner.priority import Priority

    from mm_lightning.config.rules import PRIORITY_NAMES
    assert PRIORITY_NAMES == tuple(Priority.__members__)

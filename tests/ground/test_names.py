"""The light name lists (mm_lightning.ground.names) agree with the tables they stand for."""
from mm_lightning.ground.names import LAUNCHER_NAMES, PROFILER_NAMES, PROGRESS_BAR_NAMES
from mm_lightning.translate.launchers import LAUNCHERS
from mm_lightning.translate.profiling import PROFILERS
from mm_lightning.translate.progress import PROGRESS_BARS


def test_names_match_their_tables():
    assert LAUNCHER_NAMES == tuple(LAUNCHERS)
    assert PROGRESS_BAR_NAMES == tuple(PROGRESS_BARS)
    assert PROFILER_NAMES == tuple(PROFILERS)

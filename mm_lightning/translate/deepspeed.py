"""mmengine's ``DeepSpeedStrategy`` on Lightning's, on every accelerator.

Lightning's ``DeepSpeedStrategy`` refuses any accelerator but CUDA, though DeepSpeed's engine
runs ZeRO-1/2/3 on CPU processes over gloo as well (its CPU accelerator). What in it assumes
CUDA: the check in ``setup_environment``, and the device index it reads twice, once to check
that each process has the GPU of its local rank and once as the engine's ``device_rank`` (a
CPU device has none; see :func:`~mm_lightning.ground.internals.deepspeed_device_rank`).
:class:`AnyDeviceDeepSpeedStrategy` lifts those and nothing else; on GPUs it is Lightning's.
"""
from __future__ import annotations

from typing import Any, List, Mapping, Optional, Sequence

from lightning.pytorch.accelerators import CUDAAccelerator
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy
from typing_extensions import override

from mm_lightning.ground.internals import deepspeed_device_rank

__all__ = ['AnyDeviceDeepSpeedStrategy', 'precision_refusal', 'hook_refusals']


class AnyDeviceDeepSpeedStrategy(DeepSpeedStrategy):
    """Lightning's ``DeepSpeedStrategy``, which also runs on the CPU accelerator (gloo)."""

    @override
    def setup_environment(self) -> None:
        """Lightning's refuses every accelerator but CUDA; elsewhere, what it does after that check."""
        if isinstance(self.accelerator, CUDAAccelerator):
            super().setup_environment()
            return
        DDPStrategy.setup_environment(self)  # what Lightning's does after its CUDA check

    @override
    def setup_distributed(self) -> None:
        """Lightning checks that each device's index is its local rank (a GPU's); CPU devices have none."""
        with deepspeed_device_rank(self):
            super().setup_distributed()

    @override
    def init_deepspeed(self) -> None:
        """Lightning gives the engine the root device's index as ``device_rank``; a CPU device has none."""
        with deepspeed_device_rank(self):
            super().init_deepspeed()


def precision_refusal(config: Mapping[str, Any], accelerator: str) -> Optional[str]:
    """Why DeepSpeed's engine would refuse the DeepSpeed config's precision on this machine's ``accelerator``
    (None: it would not). Its CPU accelerator has float16 only where oneDNN has it; it says so once the process
    group and the model exist."""
    if accelerator != 'cpu' or not (config.get('fp16') or {}).get('enabled', False):
        return None
    from deepspeed.accelerator import get_accelerator
    if get_accelerator().is_fp16_supported():
        return None
    return ("strategy.fp16.enabled: DeepSpeed's engine has no float16 on this machine's CPU; use "
            'bf16=dict(enabled=True), or GPUs')


def hook_refusals(config: Mapping[str, Any], custom_hooks: Optional[Sequence[Any]]) -> List[str]:
    """The hooks DeepSpeed's engine cannot carry, each by its key: ``EMAHook`` copies the model and averages
    its parameters, which ZeRO-3 partitions (its copy would hold empty partitions), and swaps the average
    into the checkpoint's weights, which the engine writes from the model itself (ZeRO-1/2/3)."""
    stage = (config.get('zero_optimization') or {}).get('stage', 0)
    return [f'custom_hooks[{index}]: EMAHook under DeepSpeedStrategy (zero_optimization.stage={stage}): the engine '
            'writes the weights its checkpoints would swap the average into, and ZeRO-3 partitions the parameters '
            'it copies; use FSDPStrategy (its EMA copy is sharded alike) or DDPStrategy'
            for index, hook in enumerate(custom_hooks or []) if _is_ema(hook)]


def _is_ema(hook: Any) -> bool:
    from mmengine.hooks import EMAHook
    from mmengine.registry import HOOKS
    if isinstance(hook, EMAHook):
        return True
    hook_type = hook.get('type') if isinstance(hook, Mapping) else None
    if isinstance(hook_type, str):
        hook_type = HOOKS.get(hook_type)
    return isinstance(hook_type, type) and issubclass(hook_type, EMAHook)

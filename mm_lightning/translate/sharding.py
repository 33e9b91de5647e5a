"""mmengine's ``FSDPStrategy`` as torch's FSDP2 (``fully_shard``) on Lightning's ``ModelParallelStrategy``.

Why FSDP2: Lightning's ``FSDPStrategy`` (FSDP1) refuses the CPU accelerator, while
``ModelParallelStrategy`` runs ``fully_shard`` on any device (gloo on CPU), and FSDP2 is the
FSDP PyTorch recommends. The same translation therefore trains on a laptop, in CI and on GPUs.

mmengine's ``model_wrapper`` settings (FSDP1 keywords) become a :class:`ShardingPlan`:
which submodules are sharded (FSDP1's ``auto_wrap_policy`` walk, unchanged), the device
mesh (``sharding_strategy``), resharding after forward, mixed precision, CPU offload and
activation checkpointing. What FSDP2 has no exact equivalent for is a note: ``explain``
lists the notes and the run logs them (:data:`NO_EXACT_EQUIVALENT`).

Every rank starts from rank 0's weights (as DDP broadcasts them), so sharding never depends
on each rank having initialised alike.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import torch
from lightning.fabric.plugins.collectives.torch_collective import default_pg_timeout
from lightning.fabric.plugins.environments import ClusterEnvironment
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.strategies import ModelParallelStrategy
from lightning.pytorch.trainer.states import TrainerFn
from mmengine.logging import print_log
from torch import nn
from torch.optim import Optimizer
from typing_extensions import override

from mm_lightning.config.loading import ConfigError
from mm_lightning.config.registry import resolve_type
from mm_lightning.ground.internals import apply_activation_checkpointing, set_data_parallel_size
from mm_lightning.state import sharded_state
from mm_lightning.state.convert import as_lightning
from mm_lightning.state.sharded_state import is_sharded
from mm_lightning.translate.sharded_model import shard_like_unsharded, unsharded_template

__all__ = ['SHARDING_STRATEGIES', 'NO_EXACT_EQUIVALENT', 'ShardingPlan', 'plan_from_wrapper', 'wrap_targets',
           'is_sharded', 'shard_model', 'FSDP2Strategy', 'shard_for', 'plan_of']

#: mmengine's ``sharding_strategy`` (FSDP1) -> (how ranks are laid out, reshard parameters after forward).
#: ``shard``: one mesh of every rank; ``hybrid``: shard within a node, replicate across nodes (HSDP);
#: ``replicate``: every rank keeps everything (FSDP1's NO_SHARD: HSDP with shards of one rank).
SHARDING_STRATEGIES: Dict[str, Tuple[str, bool]] = {
    'FULL_SHARD': ('shard', True),
    'SHARD_GRAD_OP': ('shard', False),
    'NO_SHARD': ('replicate', False),
    'HYBRID_SHARD': ('hybrid', True),
    '_HYBRID_SHARD_ZERO2': ('hybrid', False),
}

#: FSDP1 keywords FSDP2 has no exact equivalent for: what the run does instead (explain lists each).
NO_EXACT_EQUIVALENT: Dict[str, str] = {
    'backward_prefetch': 'FSDP2 prefetches the next all-gather in backward itself (as BACKWARD_PRE)',
    'forward_prefetch': 'FSDP2 prefetches in forward by its own order; the setting is not used',
    'limit_all_gathers': 'FSDP2 limits in-flight all-gathers itself; the setting is not used',
    'use_orig_params': 'FSDP2 always keeps the original parameters (as use_orig_params=True)',
    'sync_module_states': "every rank starts from rank 0's weights (as sync_module_states=True)",
    'param_init_fn': 'models are built with real tensors, so there is nothing for it to initialise',
    'device_id': 'Lightning places each rank on its device',
    'mixed_precision.buffer_dtype': 'FSDP2 does not cast buffers; they keep their dtype',
    'mixed_precision.keep_low_precision_grads': 'FSDP2 casts gradients back to the parameter dtype',
    'mixed_precision.cast_root_forward_inputs': "FSDP2 casts the root's inputs when cast_forward_inputs is set",
}


@dataclass
class ShardingPlan:
    """How a model is sharded with ``fully_shard``, translated from mmengine's ``model_wrapper``."""

    auto_wrap_policy: Optional[Callable[..., bool]] = None
    layout: str = 'shard'
    reshard_after_forward: bool = True
    param_dtype: Optional[torch.dtype] = None
    reduce_dtype: Optional[torch.dtype] = None
    cast_forward_inputs: bool = True
    cpu_offload: bool = False
    activation_checkpointing: Optional[Callable[[nn.Module], bool]] = None
    ignored_modules: Tuple[Any, ...] = ()
    state_dict_type: str = 'full'
    notes: List[str] = field(default_factory=list)


# -- translation ----------------------------------------------------------------------------------
def _dtype(value: Any, key: str) -> Optional[torch.dtype]:
    if value is None or isinstance(value, torch.dtype):
        return value
    if isinstance(value, str) and isinstance(getattr(torch, value, None), torch.dtype):
        return getattr(torch, value)
    raise ConfigError(f'{key}: expected a torch dtype or its name, got {value!r}')


def _enum_name(value: Any) -> Any:
    return getattr(value, 'name', value)


def plan_from_wrapper(wrapper: Mapping[str, Any], key: str, resolve_function: Callable[[Any, str], Callable],
                      state_dict_type: str = 'full',
                      activation_checkpointing: Optional[Callable[[nn.Module], bool]] = None) -> ShardingPlan:
    """The plan for mmengine's ``MMFullyShardedDataParallel`` keywords (``key`` names them in errors)."""
    options = dict(wrapper)
    plan = ShardingPlan(state_dict_type=state_dict_type, activation_checkpointing=activation_checkpointing)
    strategy = _enum_name(options.pop('sharding_strategy', None) or 'FULL_SHARD')
    if strategy not in SHARDING_STRATEGIES:
        raise ConfigError(f'{key}.sharding_strategy: {strategy!r} is not one of {sorted(SHARDING_STRATEGIES)}')
    plan.layout, plan.reshard_after_forward = SHARDING_STRATEGIES[strategy]
    policy = options.pop('auto_wrap_policy', None)
    if policy is not None:
        plan.auto_wrap_policy = _with_classes(resolve_function(policy, f'{key}.auto_wrap_policy'))
    _mixed_precision(plan, options.pop('mixed_precision', None), f'{key}.mixed_precision')
    _cpu_offload(plan, options.pop('cpu_offload', None), f'{key}.cpu_offload')
    if options.pop('process_group', None) is not None:
        raise ConfigError(f'{key}.process_group: the process group comes from the launcher under Lightning')
    plan.ignored_modules = tuple(options.pop('ignored_modules', None) or ())
    if options.pop('ignored_parameters', None):
        raise ConfigError(f'{key}.ignored_parameters: give ignored_modules instead (FSDP2 ignores modules\' '
                          'parameters by module here)')
    for name in list(options):
        if name in NO_EXACT_EQUIVALENT:
            value = options.pop(name)
            if value is not None and not (name == 'use_orig_params' and value):
                plan.notes.append(f'{key}.{name}={value!r}: {NO_EXACT_EQUIVALENT[name]}')
    if options:
        raise ConfigError(f'{key}: unsupported options {sorted(options)} (FSDP2 takes none of them)')
    return plan


def _with_classes(policy: Callable[..., bool]) -> Callable[..., bool]:
    """Class names in a policy's class sets (``transformer_layer_cls``, ``module_classes``) resolved."""
    if not isinstance(policy, partial):
        return policy
    keywords = dict(policy.keywords)
    for name in ('transformer_layer_cls', 'module_classes'):
        if name in keywords:
            keywords[name] = {resolve_type(cls) if isinstance(cls, str) else cls for cls in keywords[name]}
    return partial(policy.func, *policy.args, **keywords)


def _mixed_precision(plan: ShardingPlan, spec: Any, key: str) -> None:
    if spec is None:
        return
    values = dict(spec) if isinstance(spec, Mapping) else dict(vars(spec))
    plan.param_dtype = _dtype(values.pop('param_dtype', None), f'{key}.param_dtype')
    plan.reduce_dtype = _dtype(values.pop('reduce_dtype', None), f'{key}.reduce_dtype')
    plan.cast_forward_inputs = bool(values.pop('cast_forward_inputs', True))
    values.pop('_module_classes_to_ignore', None)  # a field of FSDP1's MixedPrecision: BatchNorm kept in fp32
    defaults = dict(buffer_dtype=None, keep_low_precision_grads=False, cast_root_forward_inputs=True)
    for name, value in values.items():
        if name not in defaults:
            raise ConfigError(f'{key}: unsupported option {name!r}')
        if value != defaults[name]:
            plan.notes.append(f'{key}.{name}={value!r}: {NO_EXACT_EQUIVALENT["mixed_precision." + name]}')


def _cpu_offload(plan: ShardingPlan, spec: Any, key: str) -> None:
    if spec is None or isinstance(spec, bool):
        plan.cpu_offload = bool(spec)
    elif isinstance(spec, Mapping):
        plan.cpu_offload = bool(spec.get('offload_params', False))
    elif hasattr(spec, 'offload_params'):
        plan.cpu_offload = bool(spec.offload_params)
    else:
        raise ConfigError(f'{key}: expected a bool or CPUOffload, got {spec!r}')


# -- applying the plan ----------------------------------------------------------------------------
def wrap_targets(root: nn.Module, policy: Optional[Callable[..., bool]],
                 ignored: Tuple[nn.Module, ...] = ()) -> List[nn.Module]:
    """The submodules FSDP1's auto wrapping would wrap, children before parents (the root excluded).

    FSDP1's walk: a module is entered when ``policy(module, recurse=True, nonwrapped_numel)``,
    and wrapped when ``policy(module, recurse=False, nonwrapped_numel=<its parameters not in
    wrapped children>)``.
    """
    if policy is None:
        return []
    targets: List[nn.Module] = []
    ignored_ids = {id(module) for module in ignored}

    def numel(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    def visit(module: nn.Module, is_root: bool) -> int:
        """The number of parameters wrapped at or under ``module``."""
        total = numel(module)
        if not policy(module=module, recurse=True, nonwrapped_numel=total):
            return 0
        wrapped = sum(visit(child, False) for child in module.children() if id(child) not in ignored_ids)
        if not is_root and policy(module=module, recurse=False, nonwrapped_numel=total - wrapped):
            targets.append(module)
            return total
        return wrapped

    visit(root, True)
    return targets


def _mesh(plan: ShardingPlan, mesh: Any, num_nodes: int) -> Any:
    """The device mesh ``fully_shard`` shards over: 1-D for FULL_SHARD/SHARD_GRAD_OP, 2-D (replicate, shard)
    for HYBRID_SHARD (shards within a node) and NO_SHARD (shards of one rank)."""
    from torch.distributed.device_mesh import init_device_mesh
    if plan.layout == 'shard':
        return mesh['data_parallel']
    world = mesh.size()
    replicas = world if plan.layout == 'replicate' else num_nodes
    return init_device_mesh(mesh.device_type, (replicas, world // replicas), mesh_dim_names=('replicate', 'shard'))


def _same_start(model: nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank, as DDP broadcasts them when it wraps."""
    if not torch.distributed.is_initialized() or torch.distributed.get_world_size() == 1:
        return
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            torch.distributed.broadcast(tensor.data, src=0)


def shard_model(model: nn.Module, plan: ShardingPlan, mesh: Any, num_nodes: int = 1) -> None:
    """Apply ``plan`` to ``model`` in place (once: a sharded model is left as it is); the sharded model then
    copies and loads as the unsharded one (:mod:`mm_lightning.translate.sharded_model`)."""
    if is_sharded(model):
        return
    _same_start(model)
    if plan.activation_checkpointing is not None:
        apply_activation_checkpointing(model, check_fn=plan.activation_checkpointing)
    template = unsharded_template(model)
    shard = partial(_fully_shard, plan=plan, mesh=_mesh(plan, mesh, num_nodes))
    shard(model)
    shard_like_unsharded(model, template, shard)


def _fully_shard(model: nn.Module, plan: ShardingPlan, mesh: Any) -> None:
    """``fully_shard`` on the plan's submodules, children first, then on the root."""
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard
    ignored = tuple(_ignored_modules(model, plan.ignored_modules))
    kwargs: Dict[str, Any] = dict(
        mesh=mesh, reshard_after_forward=plan.reshard_after_forward,
        mp_policy=MixedPrecisionPolicy(param_dtype=plan.param_dtype, reduce_dtype=plan.reduce_dtype,
                                       cast_forward_inputs=plan.cast_forward_inputs),
        offload_policy=CPUOffloadPolicy(pin_memory=torch.cuda.is_available()) if plan.cpu_offload
        else OffloadPolicy())
    if ignored:
        kwargs['ignored_params'] = {p for module in ignored for p in module.parameters()}
    for module in wrap_targets(model, plan.auto_wrap_policy, ignored):
        fully_shard(module, **kwargs)
    fully_shard(model, **kwargs)


def _ignored_modules(model: nn.Module, specs: Tuple[Any, ...]) -> Iterator[nn.Module]:
    """mmengine's forms: submodule names, or module types (every submodule of that type)."""
    named = dict(model.named_modules())
    for spec in specs:
        if isinstance(spec, str) and spec in named:
            yield named[spec]
            continue
        cls = resolve_type(spec) if isinstance(spec, str) else spec
        if not isinstance(cls, type):
            raise ConfigError(f'strategy.model_wrapper.ignored_modules: {spec!r} is neither a submodule name '
                              'nor a module type')
        yield from (module for module in model.modules() if isinstance(module, cls))


# -- the Lightning strategy -------------------------------------------------------------------------
class FSDP2Strategy(ModelParallelStrategy):
    """``ModelParallelStrategy`` with data parallelism over every rank, sharding ``ConfigModule.model``
    by a :class:`ShardingPlan` (see module doc). No tensor parallelism: mmengine configs have none."""

    def __init__(self, plan: Optional[ShardingPlan] = None, cluster_environment: Optional[ClusterEnvironment] = None,
                 process_group_backend: Optional[str] = None,
                 timeout: Optional[timedelta] = default_pg_timeout) -> None:
        self.plan = plan if plan is not None else ShardingPlan()
        super().__init__(data_parallel_size='auto', tensor_parallel_size=1,
                         save_distributed_checkpoint=self.plan.state_dict_type == 'sharded',
                         process_group_backend=process_group_backend, timeout=timeout)
        self.cluster_environment = cluster_environment

    @override
    def setup_environment(self) -> None:
        set_data_parallel_size(self, self.num_nodes * self.num_processes)  # every rank is a data-parallel rank
        super().setup_environment()

    def shard(self, model: nn.Module) -> None:
        """Shard the mmengine model (``ConfigModule.configure_model`` calls it), once; the plan's notes are logged."""
        if is_sharded(model):
            return
        for note in self.plan.notes:
            print_log(f'FSDP2 approximation: {note}', logger='current', level=logging.WARNING)
        shard_model(model, self.plan, self.device_mesh, self.num_nodes)

    # -- a Trainer's own checkpoints (ModelCheckpoint, ckpt_path), as the runner's (mm_lightning.state.sharded_state)
    @override
    def lightning_module_state_dict(self) -> Dict[str, Any]:
        """This rank's view, on every rank (DTensor shards, its own buffers): the module's hooks see the checkpoint
        as in the runner's files, and :meth:`save_checkpoint` gathers or shards it."""
        assert self.lightning_module is not None
        return self.lightning_module.state_dict()

    @override
    def optimizer_state(self, optimizer: Optimizer) -> Dict[str, Any]:
        """``optimizer.state_dict()``, with this rank's shards (torch's ``get_optimizer_state_dict`` would take a
        step of its own on an optimizer without state)."""
        return _plain(optimizer).state_dict()

    @property
    @override
    def lightning_restore_optimizer(self) -> bool:
        return True  # through load_optimizer_state_dict, after the optimizers are built over the shards

    @override
    def save_checkpoint(self, checkpoint: Dict[str, Any], filepath: Any, storage_options: Optional[Any] = None) -> None:
        """The plan's layout: a sharded directory, or one whole file written by rank 0."""
        if storage_options is not None:
            raise TypeError(f'{type(self).__name__}.save_checkpoint(..., storage_options=...) is not supported')
        path = str(self.broadcast(filepath))
        if self.plan.state_dict_type == 'sharded':
            sharded_state.save_sharded(path, checkpoint, self.checkpoint_io.save_checkpoint)
            return
        whole = sharded_state.gathered(checkpoint)
        if whole is not None:
            self.checkpoint_io.save_checkpoint(whole, path)

    @override
    def load_checkpoint(self, checkpoint_path: Any, weights_only: Optional[bool] = None) -> Dict[str, Any]:
        """A file, or a sharded directory shard to shard; either format (an mmengine one is converted)."""
        path = str(self.broadcast(checkpoint_path))
        module = self.lightning_module
        assert module is not None
        if sharded_state.is_sharded_checkpoint(path):
            checkpoint = sharded_state.load_sharded(
                path, lambda meta: self.checkpoint_io.load_checkpoint(meta, weights_only=weights_only),
                sharded_state.mesh_of(module))
        else:
            checkpoint = self.checkpoint_io.load_checkpoint(path, weights_only=weights_only)
        return as_lightning(checkpoint, path, resuming=module.trainer.state.fn == TrainerFn.FITTING)

    @override
    def load_model_state_dict(self, checkpoint: Mapping[str, Any], strict: bool = True) -> None:
        assert self.lightning_module is not None  # whole tensors and shards alike (sharded_model)
        self.lightning_module.load_state_dict(checkpoint['state_dict'], strict=strict)

    @override
    def load_optimizer_state_dict(self, checkpoint: Mapping[str, Any]) -> None:
        for optimizer, state in zip(self.optimizers, checkpoint['optimizer_states']):
            optimizer = _plain(optimizer)
            optimizer.load_state_dict(sharded_state.shard_optimizer_state(state, optimizer))


def _plain(optimizer: Optimizer) -> Optimizer:
    """The torch optimizer a ``LightningOptimizer`` wraps (or the optimizer itself)."""
    return optimizer.optimizer if isinstance(optimizer, LightningOptimizer) else optimizer


def shard_for(strategy: ModelParallelStrategy, model: nn.Module) -> None:
    """Shard ``model`` for ``strategy``: by its plan, or (a user's plain ``ModelParallelStrategy``) the whole
    model as one unit, which is what FSDP2 does without a policy; CheckpointHook then writes full files."""
    if isinstance(strategy, FSDP2Strategy):
        strategy.shard(model)
        return
    if strategy.device_mesh['tensor_parallel'].size() > 1:
        raise ConfigError('strategy.tensor_parallel_size: an mmengine model has no tensor-parallel plan; '
                          'use ModelParallelStrategy(data_parallel_size=<world size>, tensor_parallel_size=1)')
    shard_model(model, ShardingPlan(), strategy.device_mesh, strategy.num_nodes)


def plan_of(strategy: Any) -> Optional[ShardingPlan]:
    """The plan ``strategy`` shards by (None: it does not shard with FSDP2)."""
    if isinstance(strategy, FSDP2Strategy):
        return strategy.plan
    return ShardingPlan() if isinstance(strategy, ModelParallelStrategy) else None

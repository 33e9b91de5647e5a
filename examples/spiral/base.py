# Shared runtime settings (an mmengine-style ``_base_`` file).
default_scope = 'mmengine'
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', interval=5, max_keep_ckpts=2, save_best='spiral/accuracy'),
)
log_processor = dict(window_size=10)
randomness = dict(seed=0)
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))

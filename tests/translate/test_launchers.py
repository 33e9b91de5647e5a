"""Where a config runs: launchers, layout and the process group (mm_lightning.translate.launchers)."""
import pytest
from lightning.fabric.plugins.environments import SLURMEnvironment

from mm_lightning import ConfigError, trainer_kwargs
from mm_lightning.translate.launchers import init_process_group, resolve_layout


def test_nccl_is_kept_in_translation_and_refused_when_a_cpu_run_opens_the_group(monkeypatch):
    for key, value in dict(WORLD_SIZE='2', RANK='0', LOCAL_RANK='0').items():
        monkeypatch.setenv(key, value)
    env_cfg = dict(dist_cfg=dict(backend='nccl'))
    kwargs = trainer_kwargs(dict(env_cfg=env_cfg), accelerator='cpu')
    assert kwargs['strategy'].process_group_backend == 'nccl'
    with pytest.raises(ConfigError, match="env_cfg.dist_cfg.backend: 'nccl' needs GPU devices.*gloo"):
        init_process_group('pytorch', env_cfg)


@pytest.mark.parametrize('launcher, variable', [('pytorch', 'WORLD_SIZE'), ('slurm', 'SLURM_NTASKS'),
                                                ('mpi', 'OMPI_COMM_WORLD_SIZE')])
def test_missing_launcher_variables_name_the_launcher_and_the_variable(no_launcher_environment, launcher, variable):
    with pytest.raises(ConfigError, match=rf"^launcher: '{launcher}' needs the \w+ variable {variable}, which is not "
                                          r'set\. .*--devices/--num-nodes'):
        trainer_kwargs(dict(launcher=launcher, env_cfg=dict(dist_cfg=dict(backend='gloo'))), accelerator='cpu')


def test_a_run_outside_torchrun_is_refused_with_the_missing_variable(no_launcher_environment, monkeypatch):
    monkeypatch.setenv('WORLD_SIZE', '2')
    with pytest.raises(ConfigError, match="launcher: 'pytorch' needs the torchrun variable RANK.*Start the job "
                                          'with torchrun'):
        init_process_group('pytorch', dict(dist_cfg=dict(backend='gloo')))


def test_slurm_layout_comes_from_its_variables(monkeypatch):
    for key, value in dict(SLURM_NTASKS='8', SLURM_NNODES='2', SLURM_NTASKS_PER_NODE='4', SLURM_PROCID='0',
                           SLURM_LOCALID='0', SLURM_NODEID='0', SLURM_JOB_ID='1', SLURM_JOB_NAME='train',
                           SLURM_NODELIST='node[1-2]').items():
        monkeypatch.setenv(key, value)
    layout = resolve_layout('slurm', 'cpu')
    assert (layout.devices, layout.num_nodes) == (4, 2)
    kwargs = trainer_kwargs(dict(launcher='slurm', env_cfg=dict(dist_cfg=dict(backend='gloo'))))
    assert isinstance(kwargs['strategy'].cluster_environment, SLURMEnvironment)

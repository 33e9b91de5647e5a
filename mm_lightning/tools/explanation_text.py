"""An explanation as text: one section per part of :func:`~mm_lightning.tools.explain.explain`'s report.

:func:`format_explanation` turns the JSON-ready report into what ``mm-lightning explain``
prints without ``--json``: the layout, the Trainer arguments, the strategy and precision, the
schedule, the Trainer's own settings, the hooks by stage, the loggers and the warnings, in the
order a reader checks them. It reads only the report (no config, no torch), so it is kept apart
from the translation that builds the report.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence, Tuple

__all__ = ['format_explanation']


def format_explanation(report: Mapping[str, Any]) -> str:
    """The report as text: one section per part, in the order a reader checks them."""
    sections = [_format_layout, _format_trainer, _format_strategy, _format_schedule, _format_trainer_settings,
                _format_hooks,
                _format_loggers, _format_warnings]
    return '\n\n'.join(section(report) for section in sections) + '\n'


def _table(rows: Sequence[Tuple[str, Any]], indent: str = '  ') -> str:
    width = max((len(name) for name, _ in rows), default=0)
    return '\n'.join(f'{indent}{name:<{width}}  {value}' for name, value in rows)


def _points(entry: Mapping[str, Any]) -> str:
    """``after epochs 2, 4, 6, ..., 20 (10 times)``: where a validation or checkpoint happens."""
    points, count, unit = entry.get('at'), entry.get('count'), entry['unit']
    if points is None:
        return f"every {entry['interval']} {unit}s (the epoch length is known once the data is built)"
    if not points:
        return 'never'
    shown = points if len(points) <= 6 else points[:3] + ['...'] + points[-2:]
    text = ', '.join(map(str, shown))
    return f'after {unit}s {text} ({count} times)' if (count or 0) > 1 else f'after {unit} {text}'


def _format_layout(report: Mapping[str, Any]) -> str:
    layout = report['layout']
    return (f"Explaining {report.get('config') or 'the config'}\n"
            f"Layout: launcher={layout['launcher']}, accelerator={layout['accelerator']}, "
            f"{layout['devices']} device(s) per node x {layout['num_nodes']} node(s)")


def _format_trainer(report: Mapping[str, Any]) -> str:
    if report['trainer'] is None:
        return 'lightning.Trainer arguments: not translated (see warnings)'
    return 'lightning.Trainer arguments\n' + _table(sorted(report['trainer'].items()))


def _format_strategy(report: Mapping[str, Any]) -> str:
    strategy, precision = report['strategy'], report['precision']
    if strategy is None:
        return 'Strategy: not translated (see warnings)'
    lines = [f"Strategy: {strategy['name']}"]
    if strategy['settings']:
        rows = []
        for key, value in strategy['settings'].items():
            if key == 'plan':  # FSDP2's sharding plan, a row per field (its notes are warnings)
                rows += [(f'plan.{field}', entry) for field, entry in value.items() if field != 'notes']
            else:
                rows.append((key, value))
        if strategy['buffers']:
            rows.append(('buffers', strategy['buffers']))
        lines.append(_table(rows))
    if precision is None:
        return '\n'.join(lines)
    plugin = f" ({precision['plugin']}" + (f", scaler {precision['scaler']}" if precision['scaler'] else '') + ')' \
        if precision['plugin'] else ''
    scale = f", loss scale {precision['loss_scale']}" if precision['loss_scale'] is not None else ''
    lines.append(f"Precision: {precision['precision']}{plugin}{scale}")
    return '\n'.join(lines)


def _format_schedule(report: Mapping[str, Any]) -> str:
    schedule = report['schedule']
    if schedule is None:
        return 'Schedule: no training (no train_cfg)'
    if schedule['by_epoch']:
        length = f"{schedule['max_epochs']} epochs of len(train_dataloader) iterations"
    else:
        length = f"{schedule['max_iters']} iterations (one Lightning epoch)"
    rows = [('training', length)]
    if schedule['lightning']:
        rows.append(('Lightning', ', '.join(f'{k}={v}' for k, v in schedule['lightning'].items())))
    validation = schedule['validation']
    rows.append(('validation', 'none' if validation is None else _points(validation)))
    for hook in schedule['checkpoints']:
        best = f"; best by {', '.join(hook['save_best'])}" if hook['save_best'] else ''
        keep = f"; keeps {hook['max_keep_ckpts']}" if hook['max_keep_ckpts'] > 0 else ''
        rows.append(('checkpoints', f"{_points(hook)}{keep}{best}"))
    for item in schedule['param_schedulers']:
        owner = f"[{item['optimizer']}] " if item['optimizer'] else ''
        end = 'the end' if item['end'] is None else item['end']
        rows.append((f"{owner}{item['type']}", f"steps after every {item['steps_after']}, "
                                               f"{item['range_unit']}s [{item['begin']}, {end})"))
    return 'Schedule\n' + _table(rows)


def _format_trainer_settings(report: Mapping[str, Any]) -> str:
    settings = report['trainer_settings']
    if settings is None:
        return 'Trainer settings: no training loop to decide'
    rows = [(entry['setting'], f"-> {entry['key']} (now {entry['configured']}): {entry['reads']}" if entry['key']
             else f"only {' or '.join(map(str, entry['unset']))}: {entry['reads']}") for entry in settings]
    return ("A Trainer's own settings (unset: the config decides; set: the key below, as --cfg-options would)\n"
            + _table(rows))


def _format_hooks(report: Mapping[str, Any]) -> str:
    hooks = report['hooks']
    if hooks is None:
        return 'Hooks: not built (see warnings)'
    rows = [(f"{entry['stage']} <- {entry['lightning_event']}", ', '.join(entry['hooks']))
            for entry in hooks['by_stage']]
    callbacks = [(entry['name'], f"{entry['source']}: {', '.join(entry['events'])}")
                 for entry in hooks['lightning_callbacks']]
    return ('mmengine hooks by stage (bridged: stage <- Lightning event)\n' + _table(rows)
            + '\nLightning callbacks (native)\n' + _table(callbacks))


def _format_loggers(report: Mapping[str, Any]) -> str:
    loggers = report['loggers']
    if loggers is None:
        return 'Loggers: not built (see warnings)'
    rows = [(entry['vis_backend'], f"Lightning {entry['lightning_logger']} (shared with the Trainer)"
             if entry['lightning_logger'] else "mmengine's own backend")
            for entry in loggers['vis_backends']]
    rows.append(('LoggerHook', f"mmengine log lines, {loggers['log_file']}"))
    return 'Loggers\n' + _table(rows)


def _format_warnings(report: Mapping[str, Any]) -> str:
    if not report['warnings']:
        return 'Warnings: none'
    return 'Warnings\n' + '\n'.join(f"  [{entry['kind']}] {entry['message']}" for entry in report['warnings'])

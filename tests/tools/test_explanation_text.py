"""An explanation as text: every section, in order, from the report alone (test_explain.py: the full text)."""
from mm_lightning.tools.explanation_text import format_explanation

#: A report whose parts were all refused: each section says so and points at the warnings.
REFUSED = dict(config='cfg.py', layout=dict(launcher='none', accelerator='cpu', devices=1, num_nodes=1),
               trainer=None, strategy=None, precision=None, schedule=None, trainer_settings=None, hooks=None,
               loggers=None, warnings=[dict(kind='refusal', key='model', message='model: is required')])


def test_each_section_in_the_order_a_reader_checks_them():
    text = format_explanation(REFUSED)
    assert text.endswith('\n')
    assert text.split('\n\n') == [
        'Explaining cfg.py\nLayout: launcher=none, accelerator=cpu, 1 device(s) per node x 1 node(s)',
        'lightning.Trainer arguments: not translated (see warnings)',
        'Strategy: not translated (see warnings)',
        'Schedule: no training (no train_cfg)',
        'Trainer settings: no training loop to decide',
        'Hooks: not built (see warnings)',
        'Loggers: not built (see warnings)',
        'Warnings\n  [refusal] model: is required\n',
    ]


def test_no_warnings_is_said():
    assert format_explanation(dict(REFUSED, warnings=[])).endswith('Warnings: none\n')

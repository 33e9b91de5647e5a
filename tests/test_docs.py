"""Every fenced block of README.md and docs/*.md is checked, by its language.

* ```python: compiles; a block without imports (a config fragment) also runs.
* ```json: parses (``json.loads``).
* ```bash / ```sh / ```console, and the command lines of a ``$ `` transcript (its output: ``test_readme.py``):
  each ``python -m mm_lightning ...`` / ``mm-lightning ...`` command (also after ``torchrun``/``srun``) is parsed
  by the command line's own argument parser, without running, its placeholders (CONFIG, FILE, N, ...) filled in;
  each ``python <script>.py`` names a file of the repository whose ``--help`` lists every ``--flag`` shown;
  ``mm-lightning-cli`` commands are the ones ``test_readme.py`` runs; ``python -m pytest`` names paths that
  exist. A shell block with none of these is an error unless UNCHECKED gives the reason.
* anything else (output shown without its command, text): listed in UNCHECKED, keyed by (file, first line), with
  the reason; a new block nothing checks fails ``test_every_block_is_checked``.
"""
import argparse
import ast
import contextlib
import functools
import io
import json
import os
import re
import shlex
import subprocess
import sys
from typing import Dict, Iterator, List, NamedTuple, Optional, Tuple

import pytest
from paths import ROOT

#: The config a placeholder CONFIG (or an illustrative config name) stands for when a command is parsed.
EXAMPLE_CONFIG = 'examples/spiral/mlp_spiral.py'
#: Illustrative config names in the documents, parsed as EXAMPLE_CONFIG.
CONFIG_NAMES = ('CONFIG', 'configs/my_config.py', 'cfg.py')
#: Scripts the documents run that belong to another repository (an OpenMMLab repo's own tools).
EXTERNAL_SCRIPTS = {'tools/train.py': "an OpenMMLab repo's own training tool (mmdet, mmseg, mmpretrain)"}

#: Blocks no check applies to, by (file, first line), with the reason.
UNCHECKED: Dict[Tuple[str, str], str] = {
    ('README.md', 'python tools/train.py CONFIG --cfg-options runner_type=mm_lightning.FlexibleRunner'):
        "an OpenMMLab repo's tools/train.py: runner_type names mm_lightning.FlexibleRunner, which "
        'tests/runtime/test_view.py and tests/openmmlab build',
    ('docs/lightning-users.md', 'Trainer(max_steps=4) has no meaning for the epoch-based train_cfg.max_epochs=20: '
                                "mmengine's EpochBasedTrainLoop"):
        'an error message, as printed; tests/runtime/test_trainer_settings.py checks the refusals',
    ('docs/command-line.md', 'Warnings'):
        "an excerpt of explain's output on a CPU layout, shown without its command",
    ('docs/command-line.md', "Comparing mmengine's Runner and mm_lightning on spiral_lr_hook.py: 6 iterations, "
                             'seed 0, atol 0'):
        "compare's output for a config with a planted hook that is not in the repository",
}


class Block(NamedTuple):
    file: str  # relative to the repository
    line: int  # of the opening fence
    language: str
    text: str

    @property
    def first_line(self) -> str:
        return self.text.splitlines()[0] if self.text else ''

    @property
    def id(self) -> str:
        return f'{self.file}:{self.line}:{self.language or "text"}'


def documents() -> List[str]:
    """README.md and docs/*.md, relative to the repository."""
    docs = os.path.join(ROOT, 'docs')
    return ['README.md'] + sorted(f'docs/{name}' for name in os.listdir(docs) if name.endswith('.md'))


def blocks(files: Optional[List[str]] = None, root: str = ROOT) -> Iterator[Block]:
    """The fenced blocks of the documents, in order."""
    for name in files or documents():
        with open(os.path.join(root, name)) as f:
            lines = f.read().splitlines()
        opening: Optional[int] = None
        for number, line in enumerate(lines, 1):
            if not line.startswith('```'):
                continue
            if opening is None:
                opening, language = number, line[3:].strip()
            else:
                yield Block(name, opening, language, '\n'.join(lines[opening:number - 1]))
                opening = None
        assert opening is None, f'{name}:{opening}: a fence is not closed'


BLOCKS = list(blocks())
SHELL = ('bash', 'sh', 'shell', 'console')


def _is_transcript(block: Block) -> bool:
    return block.language == '' and block.text.startswith('$ ')


def _kind(block: Block) -> str:
    if block.language == 'python':
        return 'python'
    if block.language == 'json':
        return 'json'
    if block.language in SHELL or _is_transcript(block):
        return 'shell'
    return 'other'


# --- shell commands -------------------------------------------------------------------------------------------


def command_lines(block: Block) -> List[str]:
    """The block's command lines: continuations (``\\`` at the end, or a synopsis line that goes on with
    ``[--option ...]``) joined; in a transcript, only the ``$ `` lines and their continuations."""
    commands: List[str] = []
    continued = False
    for line in block.text.splitlines():
        if _is_transcript(block) and not continued:
            if not line.startswith('$ '):
                continue
            line = line[2:]
        if continued or (commands and re.match(r'\s+\[', line)):
            commands[-1] += ' ' + line.strip()
        else:
            commands.append(line)
        continued = commands[-1].endswith('\\')
        if continued:
            commands[-1] = commands[-1][:-1]
    return [command for command in commands if command.strip()]


def simple_commands(line: str) -> List[List[str]]:
    """A command line split into its simple commands (at ``&&``, ``||``, ``;``, ``|``), comments removed."""
    words = shlex.split(line, comments=True)
    commands: List[List[str]] = [[]]
    for word in words:
        if word in ('&&', '||', ';', ';;', '|'):
            commands.append([])
        else:
            commands[-1].append(word)
    return [command for command in commands if command]


def _synopsis_words(words: List[str]) -> List[str]:
    """A synopsis as one concrete command: brackets dropped, the first of ``a|b|c``, ``...`` left out."""
    concrete = []
    for word in words:
        word = word.replace('[', '').replace(']', '')
        if not word or word == '...':
            continue
        concrete.append(word.split('|')[0] if '|' in word and not word.startswith('-') else word)
    return concrete


def _mm_lightning_argv(words: List[str]) -> Optional[List[str]]:
    """The arguments of an ``mm-lightning`` / ``python -m mm_lightning`` (``torchrun ... -m mm_lightning``)."""
    for position, word in enumerate(words):
        if word == 'mm-lightning':
            return words[position + 1:]
        if word == '-m' and words[position + 1:position + 2] == ['mm_lightning']:
            return words[position + 2:]
    return None


def _subparser(parser: argparse.ArgumentParser, command: str) -> Optional[argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(command)
    return None


def _placeholder_value(action: argparse.Action) -> str:
    if action.choices:
        return str(next(iter(action.choices)))
    if action.type is int:
        return '2'
    if action.type is float:
        return '0.2'
    return 'placeholder'


def concrete_mm_lightning_argv(parser: argparse.ArgumentParser, argv: List[str]) -> List[str]:
    """A documented ``mm-lightning`` synopsis or command as arguments the parser can take: CONFIG (and the
    illustrative config names) becomes EXAMPLE_CONFIG, another placeholder (an upper-case word: FILE, N, ...)
    a value its option takes, and an option shown without its value (``--progress-bar ...``) gets one."""
    argv = _synopsis_words(argv)
    sub = _subparser(parser, argv[0]) if argv else None
    if sub is None:
        return argv
    concrete = [argv[0]]
    for position, word in enumerate(argv[1:], 1):
        previous = argv[position - 1]
        action = sub._option_string_actions.get(previous) if previous.startswith('--') else None
        if word in CONFIG_NAMES:
            word = EXAMPLE_CONFIG
        elif re.fullmatch(r'[A-Z][A-Z_]*', word):
            word = _placeholder_value(action) if action is not None else 'placeholder'
        concrete.append(word)
        if word.startswith('--'):
            action = sub._option_string_actions.get(word)
            following = argv[position + 1] if position + 1 < len(argv) else None
            if action is not None and action.nargs is None and action.option_strings \
                    and (following is None or following.startswith('--')):
                concrete.append(_placeholder_value(action))  # shown as `--option ...`
    return concrete


def parse_mm_lightning(argv: List[str]) -> Optional[str]:
    """None when the command line's parser takes ``argv``; else what it says."""
    from mm_lightning.tools.cli import _parser
    parser = _parser()
    concrete = concrete_mm_lightning_argv(parser, argv)
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            parser.parse_args(concrete)
    except SystemExit as exit:
        return f'exit {exit.code} for {concrete}: {stderr.getvalue().strip()}'
    return None


@functools.lru_cache(maxsize=None)
def script_help(script: str) -> Tuple[int, str]:
    result = subprocess.run([sys.executable, script, '--help'], capture_output=True, text=True, cwd=ROOT,
                            timeout=300, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    return result.returncode, result.stdout + result.stderr


def check_script(words: List[str]) -> Optional[str]:
    """``python <script>.py [--flag ...]``: the script exists and its ``--help`` names every flag shown."""
    script = words[1]
    if not os.path.isfile(os.path.join(ROOT, script)):
        return f'{script}: no such file in the repository'
    status, help_text = script_help(script)
    if status != 0:
        return f'{script} --help exited {status}:\n{help_text[-2000:]}'
    offered = set(re.findall(r'(?<![\w-])(--[\w-]+)', help_text))
    shown = [word.split('=')[0] for word in _synopsis_words(words[2:]) if word.startswith('--')]
    unknown = [flag for flag in shown if flag not in offered]
    return f'{script} takes no {", ".join(unknown)} (its --help offers {sorted(offered)})' if unknown else None


def _lightning_cli_commands() -> List[str]:
    from test_readme import _lightning_cli_commands as commands
    return commands()[1]


def check_shell_command(words: List[str]) -> Tuple[bool, Optional[str]]:
    """(whether a check applies, the failure if any) for one simple command."""
    while words and re.fullmatch(r'[A-Za-z_][A-Za-z0-9_]*=.*', words[0]):
        words = words[1:]  # VAR=value before the command
    if not words:
        return False, None
    argv = _mm_lightning_argv(words)
    if argv is not None:
        return True, parse_mm_lightning(argv)
    if words[0] == 'mm-lightning-cli':
        command = ' '.join(words)
        runs = [' '.join(shlex.split(run)) for run in _lightning_cli_commands()]
        return True, None if command in runs else f'{command!r} is not among the commands test_readme.py runs'
    if words[0] in ('python', 'python3') and len(words) > 1 and words[1].endswith('.py'):
        if words[1] in EXTERNAL_SCRIPTS:
            return False, None  # another repository's: nothing of ours to check it against
        return True, check_script(words)
    if words[0] in ('python', 'python3') and words[1:3] == ['-m', 'pytest']:
        paths = [word.split('::')[0] for word in words[3:] if not word.startswith('-')
                 and ('/' in word or word == 'tests')]
        missing = [path for path in paths if not os.path.exists(os.path.join(ROOT, path))]
        return bool(paths), f'pytest paths not in the repository: {missing}' if missing else None
    return False, None


def check_shell_block(block: Block) -> Tuple[int, List[str]]:
    """(how many commands were checked, the failures)."""
    checked, failures = 0, []
    for line in command_lines(block):
        for words in simple_commands(line):
            applies, failure = check_shell_command(words)
            checked += applies
            if failure:
                failures.append(f'{block.file}:{block.line}: {" ".join(words)}\n  {failure}')
    return checked, failures


# --- the tests --------------------------------------------------------------------------------------------------


def test_the_documents_have_blocks_of_each_kind():
    kinds = {_kind(block) for block in BLOCKS}
    assert {'python', 'json', 'shell'} <= kinds, kinds


def test_every_block_is_checked():
    """A block of a kind nothing checks, or a shell block with no command a check applies to, is listed in
    UNCHECKED with its reason; an entry of UNCHECKED names a block that exists."""
    unchecked = []
    keys = {(block.file, block.first_line) for block in BLOCKS}
    for block in BLOCKS:
        key = (block.file, block.first_line)
        if key in UNCHECKED:
            continue
        if _kind(block) == 'other' or (_kind(block) == 'shell' and check_shell_block(block)[0] == 0):
            unchecked.append(f'{block.id}: {block.first_line!r}')
    assert not unchecked, 'blocks nothing checks (check them, or give the reason in UNCHECKED):\n' + \
        '\n'.join(unchecked)
    stale = [key for key in UNCHECKED if key not in keys]
    assert not stale, f'UNCHECKED names blocks that no longer exist: {stale}'


def _of_kind(kind: str) -> List[Block]:
    return [block for block in BLOCKS if _kind(block) == kind and (block.file, block.first_line) not in UNCHECKED]


@pytest.mark.parametrize('block', _of_kind('python'), ids=lambda block: block.id)
def test_a_python_block_compiles(block):
    """Every Python block compiles; one without imports (a config fragment: dicts and lists) also runs."""
    code = compile(block.text, block.id, 'exec')
    tree = ast.parse(block.text)
    if not any(isinstance(node, (ast.Import, ast.ImportFrom)) for node in ast.walk(tree)):
        exec(code, {})


@pytest.mark.parametrize('block', _of_kind('json'), ids=lambda block: block.id)
def test_a_json_block_parses(block):
    json.loads(block.text)


@pytest.mark.parametrize('block', _of_kind('shell'), ids=lambda block: block.id)
def test_a_shell_block_is_taken_as_shown(block):
    """Each command of the block that names mm_lightning's command line, a script of the repository,
    ``mm-lightning-cli`` or pytest is taken as shown (see the module's docstring)."""
    _, failures = check_shell_block(block)
    assert not failures, '\n'.join(failures)


def test_a_misspelled_option_fails(tmp_path):
    """The checks catch what they are for: a typo'd option of mm-lightning and of a benchmark script."""
    (tmp_path / 'doc.md').write_text(
        '```bash\npython -m mm_lightning compare CONFIG --itres 6\n'
        'python benchmarks/startup.py --repeat-count 5\n```\n')
    [block] = blocks(['doc.md'], root=str(tmp_path))
    checked, failures = check_shell_block(block)
    assert checked == 2 and len(failures) == 2, failures
    assert 'unrecognized arguments: --itres 6' in failures[0] and '--repeat-count' in failures[1]

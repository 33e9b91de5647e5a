"""The console transcripts of README.md and docs/*.md that do not depend on timing print what the command prints
today, and the LightningCLI commands shown run as written (tests/test_docs.py checks every other block)."""
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Commands whose transcript is checked (their output has no timings); '...' in a transcript skips lines.
CHECKED = ('python -m mm_lightning explain',)


def _documents():
    """The text of README.md and of each docs/*.md, in that order."""
    docs = os.path.join(ROOT, 'docs')
    names = ['README.md'] + sorted(os.path.join('docs', name) for name in os.listdir(docs) if name.endswith('.md'))
    for name in names:
        with open(os.path.join(ROOT, name)) as f:
            yield f.read()


def _transcripts():
    """(command, the output lines shown) of each ``$ <command>`` block of the documents that CHECKED names."""
    text = '\n'.join(_documents())
    for block in re.findall(r'```\n(\$ .*?)```', text, flags=re.S):
        lines = block.splitlines()
        command = lines[0][2:]
        shown = 1
        while command.endswith('\\'):
            command = command[:-1] + ' ' + lines[shown].strip()
            shown += 1
        if command.startswith(CHECKED):
            yield command, lines[shown:]


TRANSCRIPTS = list(_transcripts())


def test_the_readme_has_transcripts_to_check():
    assert TRANSCRIPTS


@pytest.mark.parametrize('command, shown', TRANSCRIPTS, ids=[command[:60] for command, _ in TRANSCRIPTS])
def test_a_transcript_matches_what_the_command_prints(command, shown):
    argv = shlex.split(command)
    assert argv[:3] == ['python', '-m', 'mm_lightning']
    result = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True, cwd=ROOT, timeout=300)
    printed = [' '.join(line.split()) for line in result.stdout.replace(ROOT, '/path/to/repo').splitlines()]
    position = 0
    for line in shown:
        if line.strip() in ('...', '') or line.strip().endswith('...'):
            continue  # shortened in the README
        wanted = ' '.join(line.split())
        assert wanted in printed[position:], f'{wanted!r} is not printed (after line {position}):\n' + \
            '\n'.join(printed)
        position = printed.index(wanted, position) + 1


def _lightning_cli_commands():
    """The documents' LightningCLI ``main.py`` and the commands shown with it, then their ``mm-lightning-cli``
    ones (each once)."""
    text = '\n'.join(_documents())
    script = next(block for block in re.findall(r'```python\n(.*?)```', text, flags=re.S)
                  if 'LightningCLI(ConfigModule, ConfigDataModule)' in block)
    commands = [line[2:] for line in script.splitlines() if line.startswith('# python main.py ')]
    commands += [line for block in re.findall(r'```bash\n(.*?)```', text, flags=re.S)
                 for line in block.splitlines() if line.startswith('mm-lightning-cli ')]
    return script, list(dict.fromkeys(commands))


def test_the_documented_lightning_cli_commands_run_as_written(tmp_path):
    """In a directory holding the examples, as a user's checkout does: ``main.py`` as shown, each command as shown
    (``mm-lightning-cli`` is the installed console script)."""
    script, commands = _lightning_cli_commands()
    assert len(commands) == 3, commands  # fit and test with LightningCLI, fit with mm-lightning-cli
    shutil.copytree(os.path.join(ROOT, 'examples'), tmp_path / 'examples')
    (tmp_path / 'main.py').write_text(script)
    bin_dir = os.path.dirname(sys.executable)
    for command in commands:
        argv = shlex.split(command)
        argv[0] = sys.executable if argv[0] == 'python' else os.path.join(bin_dir, argv[0])
        result = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=600,
                                env={**os.environ, 'OMP_NUM_THREADS': '1'})
        assert result.returncode == 0, f'{command}\n{result.stderr[-3000:]}'
    assert (tmp_path / 'work_dirs' / 'mlp_spiral' / 'epoch_2.pth').exists()  # the fit the test command reads
    assert sorted(os.listdir(tmp_path / 'logs' / 'lightning_logs')) == ['version_0', 'version_1']  # both fits'

"""The README's console transcripts that do not depend on timing print what the command prints today."""
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Commands whose transcript is checked (their output has no timings); '...' in a transcript skips lines.
CHECKED = ('python -m mm_lightning explain',)


def _transcripts():
    """(command, the output lines shown) of each ``$ <command>`` block in the README that CHECKED names."""
    with open(os.path.join(ROOT, 'README.md')) as f:
        text = f.read()
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

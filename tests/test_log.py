"""kcnn's logger (`kcnn._log`): its progress shown by default, once, without touching the
process' logging. Run in fresh processes: pytest configures logging in its own."""

import subprocess
import sys

PROGRAM = """
import logging, sys
{before}
import kcnn
log = logging.getLogger("kcnn")
log.info("one"); log.debug("hidden")
logging.basicConfig(stream=sys.stdout, format="mine: %(message)s", level=logging.WARNING)
log.info("two")
log.setLevel(logging.WARNING); log.info("quieted")
print(logging.getLogger().level == logging.WARNING, logging.getLogger("other").getEffectiveLevel())
"""


def run(before=""):
    result = subprocess.run([sys.executable, "-c", PROGRAM.format(before=before)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout, result.stderr


def test_kcnn_shows_its_info_lines_until_the_program_configures_logging_then_through_its_handlers_once():
    out, err = run()
    # Shown with nothing configured (Python's last resort shows WARNING and above only);
    # then the program's handler shows kcnn's INFO lines, and kcnn's own steps aside.
    assert err == "kcnn: one\n"
    assert out == "mine: two\nTrue 30\n"  # Nobody else's level changed: the root's stays WARNING.


def test_a_level_set_before_kcnn_is_imported_is_kept():
    out, err = run(before='logging.getLogger("kcnn").setLevel(logging.WARNING)')
    assert (out, err) == ("True 30\n", "")

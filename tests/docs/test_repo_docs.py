"""The README's test command is what CI runs."""
import re
import repo_paths

ROOT = repo_paths.ROOT


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Run the tests", 1)[1]
    command = re.search(r"```bash\n(.+?)\n```", section, re.S).group(1).strip()
    ci = (ROOT / ".ci" / "run").read_text()
    block = ci.split("# --- README test command", 1)[1].split("# --- end README test command", 1)[0]
    ci_command = block.split("\n", 1)[1].strip()
    assert ci_command == command

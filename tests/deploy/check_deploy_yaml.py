#!/usr/bin/env python3
"""yamllint over every YAML file under deploy/ with deploy/.yamllint.yaml.

Exit 0: clean; 1: a problem (yamllint's report printed); 77: yamllint is not installed.
"""

import os
import subprocess
import sys

SOURCE = os.environ.get("MEDUSA_SOURCE_DIR") or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    yamllint = os.path.join(os.path.dirname(sys.executable), "yamllint")
    if not os.path.exists(yamllint):
        print(f"SKIPPED: {yamllint} is missing (scripts/setup.sh installs the pinned yamllint in build/pytools)")
        return 77
    deploy = os.path.join(SOURCE, "deploy")
    files = sorted(os.path.join(root, f) for root, _, names in os.walk(deploy) for f in names
                   if f.endswith((".yaml", ".yml")))
    if len(files) < 10:
        print(f"FAIL: only {len(files)} YAML files under {deploy}")
        return 1
    out = subprocess.run([yamllint, "--strict", "-c", os.path.join(deploy, ".yamllint.yaml"), *files],
                         capture_output=True, text=True)
    print(out.stdout + out.stderr)
    print(f"yamllint --strict: {len(files)} files, rc {out.returncode}")
    return 0 if out.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

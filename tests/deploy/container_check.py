"""The container check: scripts/container.sh check cpu (build the base and CPU images, run the image
on loopback with the default model, health, one Generate, SIGTERM during a stream: drained, exit 0).

Exit 77 (skipped), with the reason, only where podman cannot run a container at all (not
installed, or `podman info` fails); any failure of the check itself is a failure.
"""
import os
import shutil
import subprocess
import sys

SOURCE = os.environ.get("MEDUSA_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
BINARY = os.environ.get("MEDUSA_BINARY_DIR", os.path.join(SOURCE, "build"))


def main():
    if shutil.which("podman") is None:
        print("SKIPPED: podman is not installed (scripts/setup.sh installs podman, runc and mmdebstrap)")
        return 77
    # The same containers.conf the script writes (runc, ulimits): podman info with it says whether
    # podman can work here at all.
    script = os.path.join(SOURCE, "scripts", "container.sh")
    env = dict(os.environ, MEDUSA_BUILD_DIR=BINARY)
    conf_dir = os.path.join(BINARY, "container")
    os.makedirs(conf_dir, exist_ok=True)
    hard = subprocess.run(["bash", "-c", "ulimit -Hn"], capture_output=True, text=True, check=True).stdout.strip()
    hard = "1048576" if hard == "unlimited" else hard
    probe_conf = os.path.join(conf_dir, "probe-containers.conf")
    with open(probe_conf, "w", encoding="utf-8") as f:
        f.write(f'[containers]\ndefault_ulimits = ["nofile={hard}:{hard}", "nproc=32768:32768"]\n'
                '[engine]\nruntime = "runc"\n')
    info = subprocess.run(["podman", "info"], capture_output=True, text=True, check=False,
                          env=dict(env, CONTAINERS_CONF=probe_conf))
    if info.returncode != 0:
        print(f"SKIPPED: podman cannot run here (`podman info` failed): {info.stderr.strip()[-2000:]}")
        return 77
    result = subprocess.run(["bash", script, "check", "cpu"], env=env, check=False)
    return 0 if result.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

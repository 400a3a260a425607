"""What the benchmark scripts share: the repository's paths, AlpacaEval prompt files, free
loopback ports and waiting for a medusa-server to serve."""
import json
import os
import socket
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOL = os.path.join(ROOT, "models", "smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
HEADS = os.path.join(ROOT, "heads", "SmolLM2-135M-Instruct.medusa.safetensors")


def prompts_file(count, skip, chat=True):
    """A JSONL file of AlpacaEval instructions #skip.. #skip+count-1: chat messages, or plain
    prompts with chat=False. The caller removes it."""
    data = json.load(open(os.path.join(ROOT, "data", "alpaca_eval.json")))
    f = tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False)
    for row in data[skip:skip + count]:
        record = {"messages": [{"role": "user", "content": row["instruction"]}]} if chat else {"prompt": row["instruction"]}
        f.write(json.dumps(record) + "\n")
    f.close()
    return f.name


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_serving(addr, build, timeout=300):
    """Returns once the medusa-server at addr answers a one-token request."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = subprocess.run([os.path.join(build, "bin", "medusa"), "client", "--addr", addr, "--prompt", "hi",
                            "--max-tokens", "1", "--json"], capture_output=True, text=True)
        if r.returncode == 0:
            return
        time.sleep(1)
    raise SystemExit("medusa-server did not start serving")


def machine():
    """The CPU's model name, as lscpu gives it."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name"))
    except (OSError, StopIteration):
        return "unknown"

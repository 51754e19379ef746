"""A scripted arena study, end to end over the HTTP API: a real server with a base model and an adapter,
N blind battles on prompts drawn from a held-out file, a rule in place of a person voting, then
`prefkit arena stats`, `prefkit arena export`, `prefkit data check` on the export and one DPO step on it.

    python scripts/arena_study.py --adapter dpo=RUN_DIR [--model smollm2-135m-instruct] \\
        [--prompts builtin:tutor_test] [--battles 40] [--out benchmarks/results/arena_study]

The voter (``tutor_vote``) wants a Socratic tutor: a reply that asks the learner a question beats one
that does not; a reply that loops or is empty loses; both looping or empty is "both bad"; otherwise a
tie. It stands in for people so the study can be rerun; with people, open the page's Arena tab instead
(docs/human-eval.md). Writes ``study.json`` (every figure, the commands, the machine) and ``battles.md``
(every prompt, both replies, the vote and who was who) to ``--out``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from prefkit.score.guards import loops
from prefkit.serve.process import ServerProcess

KEY = "sk-arena-study"


def tutor_vote(a: str, b: str) -> str:
    def bad(reply: str) -> bool:
        return not reply.strip() or loops(reply)

    def asks(reply: str) -> bool:
        return not bad(reply) and ("?" in reply or "？" in reply)

    if bad(a) and bad(b):
        return "both_bad"
    if asks(a) != asks(b):
        return "a" if asks(a) else "b"
    if bad(a) != bad(b):
        return "b" if bad(a) else "a"
    return "tie"


def call(port: int, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        response = conn.getresponse()
        answer = json.loads(response.read() or b"{}")
    finally:
        conn.close()
    if response.status != 200:
        raise SystemExit(f"{method} {path}: HTTP {response.status}: {answer}")
    return answer


def prefkit(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "prefkit", *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(
            f"prefkit {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    return done


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--adapter", required=True, help="NAME=RUN_DIR of the trained adapter")
    parser.add_argument("--prompts", default="builtin:tutor_test")
    parser.add_argument("--battles", type=int, default=40)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/arena_study"))
    args = parser.parse_args()

    out = args.out.resolve()
    runs = out / "runs"
    if (runs / "arena" / "votes.jsonl").exists():
        raise SystemExit(f"{runs}/arena/votes.jsonl exists: choose another --out (a study starts empty)")
    runs.mkdir(parents=True, exist_ok=True)
    serve_args = [
        "--model", args.model, "--adapter", args.adapter, "--ui", "--runs", str(runs),
        "--prompts", args.prompts, "--max-tokens", str(args.max_tokens), "--log-level", "warning",
    ]  # fmt: skip
    started = time.perf_counter()
    battles = []
    with ServerProcess(serve_args, log=out / "server.log", env={"PREFKIT_API_KEY": KEY}) as server:
        for i in range(args.battles):
            drawn = call(server.port, "GET", "/ui/api/arena/prompt")
            body = {"prompt": drawn["prompt"], "prompt_index": drawn["index"], "max_tokens": args.max_tokens}
            battle = call(server.port, "POST", "/ui/api/arena/battles", body)
            winner = tutor_vote(battle["a"]["reply"], battle["b"]["reply"])
            told = call(
                server.port,
                "POST",
                f"/ui/api/arena/battles/{battle['id']}/vote",
                {"winner": winner, "voter": "tutor-rule"},
            )
            battles.append(
                {**battle, "winner": winner, "models": {"a": told["a"]["model"], "b": told["b"]["model"]}}
            )
            print(f"battle {i + 1}/{args.battles}: {winner}", file=sys.stderr, flush=True)
    serve_seconds = time.perf_counter() - started

    stats = json.loads(prefkit("arena", "stats", str(runs), "--json").stdout)
    report = prefkit("arena", "stats", str(runs)).stdout
    pairs = out / "pairs.jsonl"
    exported = json.loads(
        prefkit("arena", "export", str(runs), "--output", str(pairs), "--force", "--json").stdout
    )
    check = prefkit("data", "check", str(pairs))
    config = out / "round2.yaml"
    round2 = out / "round2"
    config.write_text(
        f"model_name_or_path: {args.model}\ntrain_file: {pairs}\noutput_dir: {round2}\nstage: dpo\n"
        "lora_rank: 8\nmax_steps: 1\nper_device_train_batch_size: 2\ncutoff_len: 256\nlogging_steps: 1\n"
        "save_steps: 100\nreport_to: none\nplot_loss: false\n"
    )
    if round2.exists():
        subprocess.run(["rm", "-rf", str(round2)], check=True)
    prefkit("train", str(config))
    metrics = [json.loads(line) for line in (round2 / "metrics.jsonl").read_text().splitlines()]
    first_loss = next(m["loss"] for m in metrics if "loss" in m)

    result = {
        "command": " ".join(["python", "scripts/arena_study.py", *sys.argv[1:]]),
        "machine": f"{platform.processor() or platform.machine()}, {platform.system()}",
        "date": time.strftime("%Y-%m-%d"),
        "battles": args.battles,
        "serve_seconds": round(serve_seconds, 1),
        "stats": stats,
        "export": exported,
        "data_check": check.stdout.strip().splitlines()[-3:],
        "round2_step1_loss": first_loss,
    }
    (out / "study.json").write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    (out / "stats.txt").write_text(report)
    lines = [f"# {args.battles} battles ({result['date']}; `{result['command']}`)", ""]
    for i, b in enumerate(battles, 1):
        prompt = " / ".join(m["content"] for m in b["prompt"])
        lines += [f"## {i}. {prompt}", ""]
        for side in ("a", "b"):
            mark = " **(won)**" if b["winner"] == side else ""
            reply = b[side]["reply"].replace("\n", " ")
            lines.append(f"- {side.upper()} = `{b['models'][side]}`{mark}: {reply}")
        lines += ["", f"vote: {b['winner']}", ""]
    (out / "battles.md").write_text("\n".join(lines))
    print(report)
    print(f"export: {exported}\nround 2, step 1 loss: {first_loss:.4f}\nwrote {out}/study.json, battles.md")


if __name__ == "__main__":
    main()

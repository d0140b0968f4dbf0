"""`make bench`: run the benchmark suite, print each script's JSON line, then the summary table.

    python benchmarks/run_all.py [--codec] [--serve]

The default suite (4 to 8 minutes on 2 cores, more when they are shared): matmul peak, judge,
training speed and MFU against the Hugging Face peer, generation speed against HF `generate`, peak
memory, scaling. The codec
benchmark trains three stages (about 13 minutes on 2 cores); pass --codec to include it. The
serving load benchmark (about 2 minutes, a tiny run included) runs with --serve. The table's
figures are described, with their commands, in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent

SUITE = [
    ["matmul_peak.py"],
    ["judge.py"],
    ["train_speed.py"],
    ["generate_speed.py"],
    ["memory.py", "--peer"],
    ["scaling.py"],
]


def goal(met: bool) -> str:
    return "met" if met else "**not met**"


def table(results: dict[str, dict]) -> str:
    """The headline figures, ours against the peer where there is one."""
    rows = [("figure", "vlgpt", "HF peer", "ratio", "goal")]
    train = results.get("train_speed")
    if train:
        auto = train["precision_auto_picks"]
        for precision in ("bf16", "fp32"):
            if precision not in train:
                continue
            t = train[precision]
            mark = " (auto)" if precision == auto else ""
            target = f">= 1.5x: {goal(t['speedup_vs_peer'] >= 1.5)}" if precision == auto else "—"
            rows.append(
                (
                    f"pretrain step, {precision}{mark}: tokens/s",
                    f"{t['ours']['tokens_per_s']:,}",
                    f"{t['peer']['tokens_per_s']:,}",
                    f"{t['speedup_vs_peer']:.2f}x",
                    target,
                )
            )
            rows.append(
                (
                    f"pretrain step, {precision}{mark}: images/s",
                    f"{t['ours']['images_per_s']:,}",
                    f"{t['peer']['images_per_s']:,}",
                    f"{t['speedup_vs_peer']:.2f}x",
                    "—",
                )
            )
            mfu_goal = f">= 0.30: {goal(t['ours']['mfu'] >= 0.30)}" if precision == "bf16" else "—"
            rows.append(
                (
                    f"MFU, {precision} (of {train['peak_tflops'][precision]} TFLOP/s measured)",
                    f"{t['ours']['mfu']:.3f}",
                    f"{t['peer']['mfu']:.3f}",
                    "",
                    mfu_goal,
                )
            )
        side = train["image_side"]
        rows.append(
            (
                f"frozen ViT, images/s ({side['precision']})",
                f"{side['ours_vit']:,}",
                f"{side['peer_clip_vision_model']:,}",
                f"{side['vit_speedup_vs_peer']:.2f}x",
                "—",
            )
        )
        rows.append(
            (
                f"frozen ViT + image tokenizer, images/s ({side['precision']})",
                f"{side['ours_vit_and_tokenizer']:,}",
                "",
                "",
                "—",
            )
        )
        if "engine_end_to_end" in train:
            rows.append(
                (
                    "pretrain stage end to end (data + images), samples/s",
                    f"{train['engine_end_to_end']['samples_per_s']}",
                    "",
                    "",
                    "—",
                )
            )
    gen = results.get("generate_speed")
    if gen:
        rows.append(
            (
                "caption decoding, tokens/s (fp32, KV cache)",
                f"{gen['ours']['decode_tokens_per_s']}",
                f"{gen['peer']['decode_tokens_per_s']}",
                f"{gen['decode_speedup_vs_peer']:.2f}x",
                f">= 2x: {goal(gen['decode_speedup_vs_peer'] >= 2)}",
            )
        )
        rows.append(
            (
                "time to first token, ms",
                f"{gen['ours']['ttft_ms']}",
                f"{gen['peer']['ttft_ms']}",
                f"{gen['ttft_speedup_vs_peer']:.2f}x",
                "—",
            )
        )
        rows.append(
            (
                f"captions/s, batches of {gen['batch']['prompts']} prompts",
                f"{gen['batch']['ours_batched_captions_per_s']}",
                f"{gen['batch']['peer_batched_captions_per_s']}",
                f"{gen['batch']['ours_speedup']:.2f}x",
                "—",
            )
        )
        rows.append(
            ("text-to-image latency, ms per image", f"{gen['text_to_image']['ms_per_image']}", "", "", "—")
        )
    mem = results.get("memory")
    if mem:
        for key, value in mem.items():
            if isinstance(value, dict) and not key.endswith("_peer"):
                peer = mem.get(f"{key}_peer")
                rows.append(
                    (
                        f"peak RSS, {key.replace('_', ' ')}, MiB",
                        f"{value['peak_rss_mib']}",
                        f"{peer['peak_rss_mib']}" if peer else "",
                        "",
                        "—",
                    )
                )
    scale = results.get("scaling")
    if scale:
        lengths = scale["by_length"]
        rows.append(
            (
                f"step time exponent in sequence length ({lengths['length'][0]}-{lengths['length'][-1]})",
                f"{lengths['ours_exponent']}",
                f"{lengths['peer_exponent']}",
                "",
                "—",
            )
        )
        rows.append(
            (
                f"step time exponent in images per sequence ({scale['by_images']['images'][1]}-"
                f"{scale['by_images']['images'][-1]})",
                f"{scale['by_images']['ours_exponent']}",
                "",
                "",
                "—",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main() -> int:
    scripts = [list(s) for s in SUITE]
    if "--codec" in sys.argv:
        scripts.append(["codec.py", "--run", "runs/bench-codec"])
    if "--serve" in sys.argv:
        scripts.append(["serve_load.py", "--run", "runs/serve-bench", "--requests", "200"])
    results: dict[str, dict] = {}
    start = time.perf_counter()
    for script in scripts:
        result = subprocess.run(
            [sys.executable, str(HERE / script[0]), *script[1:]], capture_output=True, text=True
        )
        if result.returncode:
            print(result.stderr, file=sys.stderr)
            return result.returncode
        for line in result.stdout.splitlines():
            if line.startswith("{"):
                print(line, flush=True)
                record = json.loads(line)
                results[record.get("benchmark", script[0])] = record
    print()
    print(table(results))
    print(f"\nmake bench: {time.perf_counter() - start:.0f} s wall")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

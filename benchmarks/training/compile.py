"""Does ``torch.compile`` pay for training here? Eager against compiled training steps.

One network (by default the one the plan chose for ISBI 2012 on a 2-core CPU: depth 4, 8
base channels, 8 patches of 256 px), in the layout and precision the Trainer uses
(channels-last on CPU and CUDA; mixed precision where :func:`unetseg.nn.device.amp_dtype`
gives one; on a CPU with ``torch.use_deterministic_algorithms`` on, as training runs there), two copies with the same initial weights: one eager, one through
``torch.compile`` (inductor). After the compiled copy's first calls (the compile time,
reported apart), the steps alternate, eager then compiled, so that both see the same load;
each step is zero_grad, forward, BCE loss, backward, AdamW step on one fixed random batch.

It prints the medians, their ratio, and the budget from which compiling pays: the compile
time divided by the share of each step it saves. A run shorter than that loses time.

Usage, from the repository root::

    .venv/bin/python benchmarks/training/compile.py [--steps 20] [--channels 8] [--depth 4]
        [--patch 256] [--batch 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps of each copy (default 20)")
    parser.add_argument("--channels", type=int, default=8, help="base channels (default 8)")
    parser.add_argument("--depth", type=int, default=4, help="poolings (default 4)")
    parser.add_argument("--patch", type=int, default=256, help="patch side in pixels (default 256)")
    parser.add_argument("--batch", type=int, default=8, help="patches per step (default 8)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument(
        "--nondeterministic",
        action="store_true",
        help="leave torch.use_deterministic_algorithms off (training on a CPU turns it on)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT / "src"))
    import torch

    from unetseg.nn.device import amp_dtype, pick_device
    from unetseg.nn.model import UNet

    device = pick_device(args.device)
    if device.type == "cpu" and not args.nondeterministic:
        torch.use_deterministic_algorithms(True)  # as unetseg.training.run trains on a CPU
    dtype = amp_dtype(device) or torch.float32
    layout = torch.channels_last if device.type in ("cpu", "cuda") else torch.contiguous_format
    torch.manual_seed(0)
    image = torch.rand(args.batch, 1, args.patch, args.patch, device=device).contiguous(memory_format=layout)
    target = (torch.rand(args.batch, 1, args.patch, args.patch, device=device) > 0.7).float()

    def copy() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(0)
        model = UNet(in_channels=1, out_channels=1, depth=args.depth, base_channels=args.channels)
        model = model.to(device).train().to(memory_format=layout)
        return model, torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> float:
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            logits = model(image)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), target)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    eager, eager_opt = copy()
    compiled_model, compiled_opt = copy()
    compiled = torch.compile(compiled_model)
    for _ in range(2):  # first calls: one-off costs of the eager kernels
        step(eager, eager_opt)
    started = time.perf_counter()
    first = [step(compiled, compiled_opt) for _ in range(3)]  # compiles forward and backward
    compile_seconds = time.perf_counter() - started
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(args.steps):
        times["eager"].append(step(eager, eager_opt))
        times["compiled"].append(step(compiled, compiled_opt))
    eager_s, compiled_s = statistics.median(times["eager"]), statistics.median(times["compiled"])
    saved = 1 - compiled_s / eager_s
    # the compile costs the first calls' time beyond three compiled steps
    overhead = compile_seconds - 3 * compiled_s
    result = {
        "network": {"depth": args.depth, "base_channels": args.channels, "patch": args.patch, "batch": args.batch},
        "device": device.type, "deterministic": torch.are_deterministic_algorithms_enabled(), "precision": str(dtype).removeprefix("torch."), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
        "first_three_compiled_steps_seconds": [round(t, 3) for t in first], "compile_seconds": round(overhead, 1),
        "eager_step_seconds": round(eager_s, 4), "compiled_step_seconds": round(compiled_s, 4),
        "compiled_over_eager": round(compiled_s / eager_s, 3),
        "pays_from_minutes": round(overhead / saved / 60, 1) if saved > 0 else None,
    }  # fmt: skip
    print(
        f"{args.batch} x {args.patch} px, depth {args.depth}, {args.channels} channels, {device.type} "
        f"{result['precision']}, {result['threads']} threads, median of {args.steps} alternating steps each:\n"
        f"  eager      {eager_s:.3f} s a step\n"
        f"  compiled   {compiled_s:.3f} s a step ({compiled_s / eager_s:.3f} of eager), "
        f"after {overhead:.0f} s of compiling\n"
        + (
            f"  compiling pays in runs longer than {result['pays_from_minutes']} min of training"
            if saved > 0
            else "  compiling does not pay: the compiled step is not faster"
        )
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

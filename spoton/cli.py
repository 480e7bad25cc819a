"""`spoton` command line: synth, run, eval, export, environments, demo.

Heavy imports (torch, Prefect) happen inside the commands so `spoton --help`
stays instant.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from spoton.config import PROJECT_ROOT, RunConfig, get_settings, list_environments


def _run_config(args: argparse.Namespace) -> RunConfig:
    base: dict[str, Any] = {}
    if args.config:
        try:
            base = json.loads(Path(args.config).read_text())
        except FileNotFoundError:
            raise SystemExit(f"error: config file not found: {args.config}") from None
        except json.JSONDecodeError as e:
            raise SystemExit(f"error: config file {args.config} is not valid JSON: {e}") from None
    for key in ("detector", "tracker", "embedder", "device", "max_frames"):
        value = getattr(args, key, None)
        if value is not None:
            base[key] = value
    return RunConfig.model_validate(base)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--detector", help="bgsub (default) | torchvision | mot")
    p.add_argument("--tracker", help="bytetrack (default) | botsort | ocsort | strongsort | deepocsort")
    p.add_argument("--embedder", help="color (default) | openclip | boxmot-reid")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--max-frames", type=int, help="process at most N frames per sub-video")
    p.add_argument("--config", help="JSON file with RunConfig fields (options, association thresholds)")


def cmd_synth(args: argparse.Namespace) -> int:
    from spoton.synth import SceneSpec, generate_scene, parse_size

    spec = SceneSpec(
        env=args.env, cameras=args.cameras, people=args.people, seconds=args.seconds,
        sub_videos=args.sub_videos, fps=args.fps, size=parse_size(args.size), seed=args.seed,
        reentry=args.reentry,
    )
    t0 = time.perf_counter()
    info = generate_scene(Path(args.out), spec, progress=True)
    print(f"scene written to {args.out} in {time.perf_counter() - t0:.1f} s: {info}")
    return 0


def run_flow(environment: str, videos: str | None, config: RunConfig, out: str | None) -> dict:
    """Run the Prefect flow (ephemeral API unless PREFECT_API_URL is set)."""
    if out:
        os.environ["SPOTON_RUNS_URL"] = str(Path(out).resolve()) if "://" not in out else out
        get_settings.cache_clear()
    from flows.process import process_environment

    return process_environment(environment_id=environment, videos=videos, run_config=config)


def cmd_run(args: argparse.Namespace) -> int:
    summary = run_flow(args.environment, args.videos, _run_config(args), args.out)
    print(json.dumps(summary, indent=2, default=str))
    print(f"\nrun id: {summary['run_id']}\nartefacts: {summary['run_url']}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from spoton.metrics import evaluate_run

    result = evaluate_run(args.run, args.gt)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(format_metrics(result))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from spoton import metrics

    out = Path(args.out or Path(args.run) / f"export_{args.format}")
    if args.format == "mot":
        metrics.export_mot(args.run, out)
    elif args.format == "aicity":
        metrics.export_aicity(args.run, out if out.suffix else out / "aicity.txt")
    else:
        metrics.export_identities_json(args.run, out if out.suffix else out / "identities.json")
    print(f"exported {args.format} to {out}")
    return 0


def cmd_environments(args: argparse.Namespace) -> int:  # noqa: ARG001
    for env_id in list_environments():
        print(env_id)
    return 0


def format_metrics(result: dict) -> str:
    """Small fixed-width table of the evaluation JSON."""
    lines = [f"{'camera':<10}{'MOTA':>8}{'IDF1':>8}{'HOTA':>8}"]
    for cam, m in sorted(result.get("per_camera", {}).items()):
        lines.append(f"{cam:<10}{m['mota']:>8.3f}{m['idf1']:>8.3f}{m['hota']:>8.3f}")
    if "mtmc" in result:
        mt = result["mtmc"]
        lines.append(f"\nMTMC  IDF1 {mt['idf1']:.3f}  IDP {mt['idp']:.3f}  IDR {mt['idr']:.3f}")
    if "identities" in result:
        ids = result["identities"]
        lines.append(f"identities: predicted {ids['predicted']}, true {ids['true']}")
    if "map_error_m" in result:
        me = result["map_error_m"]
        lines.append(f"map error: mean {me['mean']:.3f} m, p90 {me['p90']:.3f} m")
    return "\n".join(lines)


def cmd_demo(args: argparse.Namespace) -> int:
    from spoton.demo import run_demo

    return run_demo(out=Path(args.out), regenerate=args.regenerate)


def cmd_build_native(args: argparse.Namespace) -> int:
    from spoton import compiled
    from spoton.track import NATIVE_TRACKERS, build_native

    names = tuple(args.trackers) or NATIVE_TRACKERS
    try:
        built = {"SpotOn's C++ parts (spoton/native)": compiled.build(), **build_native(names)}
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        print("the pipeline still works on its Python code paths, only slower", file=sys.stderr)
        return 1
    for name, path in built.items():
        print(f"{name}: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spoton", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="generate a synthetic multi-camera scene with ground truth")
    p.add_argument("out")
    p.add_argument("--env", default="demo")
    p.add_argument("--cameras", type=int, default=4)
    p.add_argument("--people", type=int, default=10)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--sub-videos", type=int, default=2)
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--size", default="1280x720")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reentry", action="store_true", help="people leave and come back")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("run", help="run the pipeline (Prefect flow) on an environment")
    p.add_argument("--environment", "-e", required=True)
    p.add_argument("--videos", help="fsspec URL with video_<env>/<camera>/sub_video_NN.mp4")
    p.add_argument("--out", help="runs location (local dir or fsspec URL)")
    _add_run_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("eval", help="score a run against ground truth")
    p.add_argument("run", help="run directory (runs/<run_id>)")
    p.add_argument("gt", help="scene directory holding gt/<camera>/gt.txt and gt/ground_plane.csv")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("export", help="export a run (MOTChallenge, AI City MTMC, identities JSON)")
    p.add_argument("run")
    p.add_argument("--format", choices=["mot", "aicity", "json"], default="mot")
    p.add_argument("--out")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("environments", help="list configured environments")
    p.set_defaults(func=cmd_environments)

    p = sub.add_parser(
        "build-native",
        help="build the C++ parts (bgsub group fitting and frame shrinking, bytetrack, ocsort): same results, faster",
    )
    p.add_argument("trackers", nargs="*", help="which ones (default: all that have a C++ backend)")
    p.set_defaults(func=cmd_build_native)

    p = sub.add_parser("demo", help="generate the demo scene, run the flow, render results")
    p.add_argument("--out", default=str(PROJECT_ROOT / "out" / "demo"))
    p.add_argument("--regenerate", action="store_true")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
